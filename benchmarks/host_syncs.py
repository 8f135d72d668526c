"""Host syncs of the pretraining loop on a GPU, by source line (issue 7: "no host sync in the step").

Runs `selfsup pretrain` with torch.cuda.set_sync_debug_mode("warn"), which warns at every operation that
makes the host wait for the GPU, and counts the warnings by the innermost selfsup line that caused them.
A line counted about once per step syncs every step; the loop should show only its log interval, its
checkpoint saves and its start. Without a GPU it records instead the ATen ops that would transfer on one
(selfsup/train/host_transfers.py; tests/test_host_transfers.py checks every method's step that way).

    SELFSUP_DATA=../shared/data python benchmarks/host_syncs.py [steps=40] [key=value ...]
"""

from __future__ import annotations

import collections
import sys
import warnings

import torch
from omegaconf import DictConfig

from selfsup.config import load_config
from selfsup.train.host_transfers import HostTransferRecorder, innermost_selfsup_line
from selfsup.train.loop import pretrain


def cuda_syncs(cfg: DictConfig) -> collections.Counter[str]:
    """CUDA's own count: every operation that makes the host wait for the GPU, by selfsup line."""
    counts: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 - showwarning's signature
        if "synchronizing" in str(message):
            counts[innermost_selfsup_line()] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        pretrain(cfg)
        torch.cuda.set_sync_debug_mode("default")
    return counts


def main(argv: list[str]) -> None:
    keys = dict(a.split("=", 1) for a in argv if a.startswith("steps="))
    steps = int(keys.get("steps", 40))
    overrides = [a for a in argv if not a.startswith("steps=")]
    cfg = load_config(
        [
            "data=cifar10",
            "output_dir=/tmp/selfsup-host-syncs",
            f"trainer.max_steps={steps}",
            "trainer.epochs=1000",
            "trainer.progress=false",
            "eval.every=0",
            "analysis.every=0",
            *overrides,
        ]
    )
    if torch.cuda.is_available():
        counts = cuda_syncs(cfg)
        what = "host syncs"
    else:  # the ops that would sync on a GPU, recorded as they are dispatched
        with HostTransferRecorder() as recorder:
            pretrain(cfg)
        counts, what = recorder.counts, "ops that transfer between host and GPU on a GPU (run on CPU)"
    print(f"\n{what} in {steps} steps (log every {cfg.trainer.log_every}), by source line:")
    for where, n in counts.most_common():
        print(f"{n:6d}  {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
