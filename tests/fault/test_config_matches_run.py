"""A run directory's config.yaml is what trained it. Rerunning a finished run with changed settings used to
print "already complete" and rewrite config.yaml with values that never ran; an unfinished one resumed
silently under them. Now a changed training setting refuses in one line (old and new values, and the fix);
resume=changed continues on purpose; settings that cannot change what is trained may change; every
segment's changes land in config-history.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint
from selfsup.runs.lock import LOCK_NAME
from selfsup.train.run_settings import HISTORY_NAME

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["pretrain", "data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16"]
RUN += ["trainer.num_workers=0", "trainer.progress=false", "method.proj_hidden_dim=64", "method.proj_output_dim=32"]
RUN += ["eval.every=0", "trainer.epochs=1", "device=cpu"]  # 2 steps per epoch


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / HISTORY_NAME).read_text().splitlines()]


def snapshot(run: Path) -> dict[str, bytes]:
    """Every file of the run directory by content, but the lock file (it names the last holder)."""
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK_NAME}


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main([*RUN, f"output_dir={run}"]) == 0
    return run


def test_a_changed_setting_on_a_finished_run_refuses_in_one_line_and_changes_nothing(finished: Path, capsys):
    saved = OmegaConf.load(finished / "config.yaml")
    before = snapshot(finished)
    capsys.readouterr()
    assert main([*RUN, "optim.base_lr=0.9", "method.temperature=0.9", f"output_dir={finished}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        f"output_dir {finished} was trained with optim.base_lr={saved.optim.base_lr}, "
        f"method.temperature={saved.method.temperature}; this command sets 0.9, 0.9: choose a new output_dir=, "
        "or add resume=changed" in err
    )
    assert snapshot(finished) == before


def test_identical_or_watch_only_settings_on_a_finished_run_change_nothing(finished: Path, capsys):
    before = snapshot(finished)
    for extra in ([], ["trainer.log_every=1", "analysis.every=0", "eval.knn.k=5"]):
        assert main([*RUN, *extra, f"output_dir={finished}"]) == 0
        assert "is already complete (2 steps); nothing to do" in capsys.readouterr().out
        assert snapshot(finished) == before
    assert [r["start"] for r in history(finished)] == ["new"]


def test_an_unfinished_run_refuses_changed_settings_then_resume_changed_records_both(tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main([*RUN, "trainer.max_steps=1", f"output_dir={run}"]) == 0
    old_lr = OmegaConf.load(run / "config.yaml").optim.base_lr
    assert main([*RUN, "optim.base_lr=0.9", f"output_dir={run}"]) == 2
    assert f"optim.base_lr={old_lr}; this command sets 0.9" in capsys.readouterr().err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1  # nothing ran

    assert main([*RUN, "optim.base_lr=0.9", "resume=changed", f"output_dir={run}"]) == 0
    assert OmegaConf.load(run / "config.yaml").optim.base_lr == 0.9
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["optim"]["base_lr"] == 0.9
    first, second = history(run)
    assert (first["step"], first["start"], first["changed"]) == (0, "new", {})
    assert (second["step"], second["start"]) == (1, "changed")
    assert second["changed"] == {
        "resume": {"old": "same", "new": "changed"},
        "optim.base_lr": {"old": old_lr, "new": 0.9},
        "trainer.max_steps": {"old": 1, "new": None},
    }


def test_more_epochs_and_watch_only_settings_continue_and_are_recorded(tmp_path: Path):
    run = tmp_path / "run"
    assert main([*RUN, f"output_dir={run}"]) == 0
    old_root = OmegaConf.load(run / "config.yaml").data.root
    elsewhere = tmp_path / "data-copy"  # SELFSUP_DATA on another node, say
    more = ["trainer.epochs=2", "trainer.log_every=1", "analysis.every=0", f"data.root={elsewhere}"]
    assert main([*RUN, *more, f"output_dir={run}"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    saved = OmegaConf.load(run / "config.yaml")
    assert (saved.trainer.epochs, saved.trainer.log_every, saved.analysis.every) == (2, 1, 0)
    resumed = history(run)[-1]
    assert (resumed["step"], resumed["start"]) == (2, "resumed")
    assert resumed["changed"] == {
        "trainer.epochs": {"old": 1, "new": 2},
        "trainer.log_every": {"old": 10, "new": 1},
        "analysis.every": {"old": 100, "new": 0},
        "data.root": {"old": old_root, "new": str(elsewhere)},
    }
