"""Host syncs of the pretraining loop on a GPU, by source line (issue 7: "no host sync in the step").

Runs `selfsup pretrain` with torch.cuda.set_sync_debug_mode("warn"), which warns at every operation that
makes the host wait for the GPU, and counts the warnings by the innermost selfsup line that caused them.
A line counted about once per step syncs every step; the loop should show only its log interval, its
checkpoint saves and its start.

    SELFSUP_DATA=../shared/data python benchmarks/host_syncs.py [steps=40] [key=value ...]
"""

from __future__ import annotations

import collections
import sys
import traceback
import warnings

import torch

from selfsup.config import load_config
from selfsup.train.loop import pretrain


def innermost_selfsup_line() -> str:
    frames = [f for f in traceback.extract_stack() if "/selfsup/" in f.filename and "/benchmarks/" not in f.filename]
    if not frames:
        return "(outside selfsup)"
    frame = frames[-1]
    return f"{frame.filename.split('/selfsup/', 1)[1]}:{frame.lineno} {frame.line}"


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
    counts: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 - showwarning's signature
        if "synchronizing" in str(message):
            counts[innermost_selfsup_line()] += 1

    if not torch.cuda.is_available():
        sys.exit("host_syncs.py needs a CUDA GPU (set_sync_debug_mode is CUDA's)")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        pretrain(cfg)
        torch.cuda.set_sync_debug_mode("default")
    print(f"\nhost syncs in {steps} steps (log every {cfg.trainer.log_every}), by source line:")
    for where, n in counts.most_common():
        print(f"{n:6d}  {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
