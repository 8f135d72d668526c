"""Issue 21 item 5: a full disk, a read-only or a forbidden path in the middle of a run ends in one line
naming the path and its free space (exit 2), and the last good checkpoint stays loadable."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.errors import storage_error_line
from selfsup.runs import checkpoint
from selfsup.runs.checkpoint import load_checkpoint
from tests.fault.cli_errors import the_error
from tests.fault.test_nonfinite import ARGS as NONFINITE_ARGS

pytestmark = pytest.mark.usefixtures("one_thread")
ARGS = [*NONFINITE_ARGS, "method.proj_hidden_dim=32"]  # 8 steps, last.pt every 2


@pytest.mark.parametrize(("code", "fix"), [(errno.ENOSPC, "free space or"), (errno.EROFS, "fix its permissions or")])
def test_a_failing_checkpoint_write_ends_in_one_line_and_keeps_the_last_good_one(
    tmp_path: Path, monkeypatch, capsys, code, fix
):
    write = checkpoint.atomic_write_bytes
    saves = {"last.pt": 0}

    def failing(path: Path, data: bytes) -> None:
        if path.name == "last.pt":
            saves["last.pt"] += 1
            if saves["last.pt"] == 2:  # the save at step 4; the one at step 2 went through
                raise OSError(code, os.strerror(code), str(path) + ".tmp")
        write(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", failing)
    run = tmp_path / "run"
    assert main([*ARGS, f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    the_error(err)
    assert f"cannot write {run / 'checkpoints' / 'last.pt.tmp'}: {os.strerror(code)}; " in err
    assert "GiB free there; " + fix in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2  # verified against its sidecar


def test_other_os_errors_are_not_dressed_up():
    assert storage_error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None
    line = storage_error_line(PermissionError(errno.EACCES, "Permission denied", "/nonexistent/dir/file"))
    assert line is not None and line.startswith("cannot write /nonexistent/dir/file: Permission denied; ")
    assert "GiB free there" in line  # measured on the nearest existing parent, /
