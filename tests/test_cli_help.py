"""`selfsup --version`, and `selfsup COMMAND --help` for every command: exit 0, the command's synopsis and an
example, and nothing run (`pretrain --help` used to fail with "expected key=value")."""

from __future__ import annotations

import pytest

import selfsup
from selfsup.cli import COMMANDS, main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"selfsup {selfsup.__version__}\n"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(command, flag, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([command, "data=synthetic", flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage:\nselfsup {command} ") and "\nexamples:\n  selfsup " in out
    assert not any(tmp_path.iterdir())  # help only: nothing was trained or written
