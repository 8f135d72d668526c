"""Cost of the per-step non-finite guard (`selfsup.train.guards.all_finite`) relative to the training step.

Times a SimCLR ResNet-18 step (CIFAR stem, 32-px pre-made views) with and without the guard, interleaved
in one process so both see the same machine state; appends the ratio to benchmarks/RESULTS.md.

    python benchmarks/nonfinite_guard.py [batch=128] [repeats=10]
"""

from __future__ import annotations

import datetime as dt
import platform
import statistics
import sys
import time

import torch
from results import append_section

from selfsup.config import load_config
from selfsup.methods.build import build_model
from selfsup.train.guards import all_finite


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    batch, repeats = int(args.get("batch", 128)), int(args.get("repeats", 10))
    method = build_model(load_config(["method=simclr", "data=cifar10"]))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    views = [torch.rand(batch, 3, 32, 32), torch.rand(batch, 3, 32, 32)]

    def step(guard: bool) -> float:
        start = time.perf_counter()
        method(views)["loss"].backward()
        if guard:
            assert all_finite(method)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(True)  # warm-up
    plain, guarded, guard_only = [], [], []
    for _ in range(repeats):
        plain.append(step(False))
        guarded.append(step(True))
        method(views)["loss"].backward()
        start = time.perf_counter()
        all_finite(method)
        guard_only.append(time.perf_counter() - start)
        optimizer.zero_grad(set_to_none=True)
    p, g, o = (statistics.median(x) for x in (plain, guarded, guard_only))
    command = "python benchmarks/nonfinite_guard.py " + " ".join(argv)
    append_section(
        [
            "",
            f"## Non-finite guard cost per step — SimCLR ResNet-18, batch {batch} ({dt.date.today()})",
            "",
            f"- machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}; command: `{command.strip()}`",
            f"- median step without guard {p * 1000:.0f} ms, with guard {g * 1000:.0f} ms "
            f"(ratio {g / p:.3f}); the guard alone {o * 1000:.1f} ms = {100 * o / p:.2f}% of a step "
            f"({repeats} interleaved repeats)",
            "",
        ]
    )
    print(f"guard alone {o * 1000:.1f} ms, {100 * o / p:.2f}% of a {p * 1000:.0f} ms step")


if __name__ == "__main__":
    main(sys.argv[1:])
