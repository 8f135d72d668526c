"""The numbers behind tests/test_learning.py: per method, kNN and the representation's effective rank at step 0
and after the test's short run on `shapes`, each collapse monitor's last value against its bar, the verdict of
the test's own `failures`, and the same for SimCLR with its loss made constant (the negative control). Extra
KEY=VALUE overrides apply to every run: `trainer.precision=32` or `=bf16` for the two precisions.

    python benchmarks/learning_margins.py [methods=simclr,byol] [control=false] [KEY=VALUE ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from selfsup.methods.simclr import SimCLR  # noqa: E402
from tests.method_specs import specs  # noqa: E402
from tests.test_learning import failures, learn, with_constant_loss  # noqa: E402


def row(label: str, name: str, extra: list[str]) -> str:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcome = learn(Path(tmp) / "run", name, extra)
    (before, after), (rank0, rank1) = outcome.knn, outcome.rank
    first, last = outcome.logged["loss"]
    ends = [f"{m} {outcome.logged[m][1]:.3f} ({side} {bar:.2f})" for m, side, bar in specs()[name].learning.monitors]
    monitors = ", ".join(ends)
    found = failures(name, outcome)
    cells = [
        label,
        f"{before:.1f} -> {after:.1f}",
        f"{after - before:+.1f} (bar +{specs()[name].learning.margin:g})",
        f"{rank0:.1f} -> {rank1:.1f}",
        monitors or "-",
        f"{first:.3f} -> {last:.3f}",
        "pass" if not found else "FAIL: " + "; ".join(found),
        f"{time.perf_counter() - started:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in argv if arg.split("=", 1)[0] in ("methods", "control"))
    extra = [arg for arg in argv if arg.split("=", 1)[0] not in ("methods", "control")]
    names = options["methods"].split(",") if "methods" in options else list(specs())
    torch.set_num_threads(1)
    print("| method | kNN step 0 -> end | gain | effective rank | monitors (end) | loss, first -> last 20 | test | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        print(row(name, name, extra), flush=True)
    if options.get("control", "true") == "true":
        SimCLR.forward = with_constant_loss(SimCLR.forward)
        print(row("control: SimCLR, loss x 0 + 1", "simclr", extra), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
