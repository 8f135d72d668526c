"""Shared by the benchmark scripts: append a Markdown section to benchmarks/RESULTS.md (or to the file
SELFSUP_RESULTS names: a device run collects only its own sections) and echo it."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(os.environ.get("SELFSUP_RESULTS") or Path(__file__).parent / "RESULTS.md")


def append_section(lines: list[str]) -> None:
    text = "\n".join(lines)
    with open(RESULTS, "a") as f:
        f.write(text)
    print(text)
