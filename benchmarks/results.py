"""Shared by the benchmark scripts: append a Markdown section to benchmarks/RESULTS.md and echo it."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"


def append_section(lines: list[str]) -> None:
    text = "\n".join(lines)
    with open(RESULTS, "a") as f:
        f.write(text)
    print(text)
