"""The CLI's contract for bad input, shared by the fault tests: exit 2 and one line on stderr, no traceback."""

from __future__ import annotations

from selfsup.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI with `argv`, assert it refused in one clean line, and return that line without its prefix."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err + captured.out
    return lines[0].removeprefix("selfsup: error: ")
