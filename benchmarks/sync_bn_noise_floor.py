"""Is a 2-process sync-BN run's drift from a 1-process run a real difference, or float32 reduction order?
Runs tests/test_sync_bn.py's 4-step SimCLR with full-depth init (zero_init_residual=false) three times: one
process on 1 thread, one process on 2 threads (only the reduction order changes), two processes with sync BN;
prints the largest relative difference of any tensor between each pair.

    python benchmarks/sync_bn_noise_floor.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_sync_bn import PRETRAIN  # noqa: E402

ARGS = [a for a in PRETRAIN if not a.startswith("backbone.zero_init_residual")] + ["backbone.zero_init_residual=false"]


def train(out: Path, devices: int, threads: int) -> dict[str, torch.Tensor]:
    cmd = [sys.executable, "-m", "selfsup.cli", *ARGS, f"trainer.devices={devices}", f"output_dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if proc.returncode != 0:
        sys.exit(proc.stderr[-2000:])
    return torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]


def largest_relative_difference(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> tuple[str, float]:
    diffs = {k: float((x[k] - y[k]).abs().max() / (x[k].abs().max() + 1e-12)) for k in x if x[k].is_floating_point()}
    key = max(diffs, key=diffs.get)
    return key, diffs[key]


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        one = train(Path(tmp) / "one-t1", 1, 1)
        threads = train(Path(tmp) / "one-t2", 1, 2)
        two = train(Path(tmp) / "two-t1", 2, 1)
    for label, other in (("1 process, 1 vs 2 threads (reduction order only)", threads), ("1 vs 2 processes", two)):
        key, diff = largest_relative_difference(one, other)
        print(f"{label}: {diff:.4f} ({key})")
