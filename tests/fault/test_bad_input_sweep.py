"""The bad-input sweep as a test: every one of its 191 bad inputs, across every command, is refused in one
line (exit 2, no traceback) with nothing changed on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault.bad_input_sweep import sweep

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_bad_input_is_refused_in_one_line_and_changes_nothing(tmp_path: Path, capsys):
    failed = sweep(tmp_path, None)
    report = capsys.readouterr().out
    assert failed == 0, "\n".join(line for line in report.splitlines() if line.startswith("FAIL"))
    assert "191 of 191 bad inputs refused" in report
