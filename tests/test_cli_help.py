"""`selfsup --version`; `selfsup COMMAND --help` for every command: exit 0, the command's synopsis and an
example, and nothing run (`pretrain --help` used to fail with "expected key=value"); results on stdout, progress
bars and notes on stderr."""

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


def test_pretrain_prints_its_result_on_stdout_and_its_progress_on_stderr(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "data=synthetic", "data.subset=64", "trainer.batch_size=32", "trainer.epochs=1"]
    assert main([*args, "backbone=resnet18", "method.proj_hidden_dim=32", "device=cpu", f"output_dir={run}"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"finished 2 steps; run directory: {run}\n"
    assert "selfsup pretrain: simclr / resnet18 on synthetic (64 images" in captured.err
    assert "epoch 1/1" in captured.err  # the progress bar
