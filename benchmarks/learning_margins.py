"""The numbers behind tests/test_learning.py: per method family, kNN at step 0 and after the test's short
run on `shapes`, the loss at the start and the end, and the same for SimCLR with its loss made constant
(the negative control). Optional extra overrides apply to every run, for calibration.

    python benchmarks/learning_margins.py [families=contrastive,generative] [KEY=VALUE ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from selfsup.methods.simclr import SimCLR  # noqa: E402
from tests.test_learning import FAMILIES, MARGIN, loss_ends, train, with_constant_loss  # noqa: E402


def row(name: str, overrides: list[str]) -> str:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        before, after, losses = train(Path(tmp) / "run", overrides)
    first, last = loss_ends(losses)
    verdict = "pass" if after >= before + MARGIN and last < first else "FAIL"
    seconds = time.perf_counter() - started
    cells = [name, f"{before:.1f}", f"{after:.1f}", f"{after - before:+.1f}", f"{first:.3f} -> {last:.3f}", verdict]
    return "| " + " | ".join([*cells, f"{seconds:.0f}"]) + " |"


def main(argv: list[str]) -> None:
    options = dict(arg.split("=", 1) for arg in argv if arg.startswith("families="))
    extra = [arg for arg in argv if not arg.startswith("families=")]
    names = options["families"].split(",") if "families" in options else list(FAMILIES)
    print(f"| family | kNN step 0 | kNN after | gain (bar: +{MARGIN:g}) | loss, first -> last 20 steps | test | s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        print(row(f"{name} ({FAMILIES[name][0].removeprefix('method=')})", [*FAMILIES[name], *extra]), flush=True)
    SimCLR.forward = with_constant_loss(SimCLR.forward)
    print(row("control: SimCLR, loss x 0 + 1", [*FAMILIES["contrastive"], *extra]), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
