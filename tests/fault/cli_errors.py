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


def the_error(err: str) -> str:
    """The failure of a run that had started: progress notes may precede it on stderr, the failure itself is
    one line, the last, with no traceback. Returns that line without its prefix."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("selfsup: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0].removeprefix("selfsup: error: ")


def overriding(args: list[str], *overrides: str) -> list[str]:
    """`args` with each key of `overrides` set to its new value: the CLI refuses a key given twice."""
    keys = {override.split("=", 1)[0] for override in overrides}
    return [arg for arg in args if arg.split("=", 1)[0] not in keys] + list(overrides)
