"""A run directory's config.yaml is what trained it. Rerunning a finished run with changed settings used to
print "already complete" and rewrite config.yaml with values that never ran; an unfinished one resumed
silently under them. Now a changed training setting refuses in one line (old and new values, and the fix);
resume=changed continues on purpose; settings that cannot change what is trained may change; every
segment's changes land in config-history.jsonl. The checkpoint resumed from is the authority: the command is
compared with the config it records (editing, stripping or deleting config.yaml used to let a new lr or method
through), config.yaml must still be the one written with it (a digest it keeps), and a command that asks
for fewer steps than were done is refused instead of reporting a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_errors import one_line_error, the_error
from omegaconf import OmegaConf

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint
from selfsup.runs.lock import LOCK_NAME
from selfsup.train.run_settings import HISTORY_NAME
from tests.fault.cli_errors import overriding

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
    assert main([*overriding(RUN, *more), f"output_dir={run}"]) == 0
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


# ---- the checkpoint is the authority on what ran: config.yaml edited, stripped or deleted bypasses nothing ----


@pytest.fixture
def unfinished(tmp_path: Path) -> Path:
    """A run stopped after 1 of its 2 steps (as a killed one is), with last.pt at step 1."""
    run = tmp_path / "run"
    assert main([*RUN, "trainer.max_steps=1", f"output_dir={run}"]) == 0
    return run


def edit_config(run: Path, edit) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    edit(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda run: edit_config(run, lambda cfg: cfg["optim"].update(base_lr=0.9)),
        lambda run: edit_config(run, lambda cfg: cfg["optim"].pop("base_lr")),
        lambda run: (run / "config.yaml").unlink(),
    ],
    ids=["edited", "key deleted", "file deleted"],
)
def test_a_changed_lr_is_refused_whatever_config_yaml_says(unfinished: Path, capsys, tamper):
    """The command is compared with the config last.pt records, not with config.yaml."""
    old_lr = load_checkpoint(unfinished / "checkpoints" / "last.pt")["config"]["optim"]["base_lr"]
    tamper(unfinished)
    capsys.readouterr()
    err = one_line_error(capsys, [*RUN, "optim.base_lr=0.9", f"output_dir={unfinished}"])
    assert f"was trained with optim.base_lr={old_lr}; this command sets 0.9" in err
    assert load_checkpoint(unfinished / "checkpoints" / "last.pt")["step"] == 1  # nothing ran
    assert [r["start"] for r in history(unfinished)] == ["new"]


def test_another_method_after_config_yaml_was_deleted_is_refused_in_one_line(unfinished: Path, capsys):
    (unfinished / "config.yaml").unlink()
    capsys.readouterr()
    err = one_line_error(capsys, [*RUN, "method=byol", f"output_dir={unfinished}"])
    assert err == (
        f"{unfinished} holds a run with method.name=simclr, not byol; choose another output_dir= or remove that "
        "directory"
    )


@pytest.mark.parametrize("how", ["deleted", "edited"])
def test_a_deleted_or_edited_config_yaml_is_found_by_the_digest_in_last_pt(unfinished: Path, capsys, how: str):
    """Even when the command itself matches the checkpoint: config.yaml no longer says what trained the run."""
    if how == "deleted":
        (unfinished / "config.yaml").unlink()
    else:
        edit_config(unfinished, lambda cfg: cfg["trainer"].update(log_every=3))
    capsys.readouterr()
    last = unfinished / "checkpoints" / "last.pt"
    err = one_line_error(capsys, [*RUN, f"output_dir={unfinished}"])
    assert err == (
        f"{unfinished / 'config.yaml'} was {how} after {last} was saved (SHA-256 differs from the one it records): "
        "put it back, or add resume=changed to continue from last.pt's settings and write it anew"
    )
    assert load_checkpoint(last)["step"] == 1
    assert main([*RUN, "resume=changed", f"output_dir={unfinished}"]) == 0  # the way on that the error names
    assert load_checkpoint(last)["step"] == 2
    assert OmegaConf.load(unfinished / "config.yaml").trainer.log_every == 10


def test_a_segment_stopped_before_its_first_save_resumes_with_the_same_command(tmp_path: Path):
    """config.yaml is written when a segment starts, last.pt at its first save: in between, config.yaml is
    this command's own, which is accepted."""
    from selfsup.config import load_config, save_config

    run = tmp_path / "run"
    assert main([*RUN, f"output_dir={run}"]) == 0
    longer = [*overriding(RUN[1:], "trainer.epochs=2"), f"output_dir={run}"]
    save_config(load_config(longer), run / "config.yaml")  # what `pretrain *longer` writes before its first step
    assert main(["pretrain", *longer]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


@pytest.mark.parametrize("finished_first", [False, True])
def test_fewer_epochs_than_done_are_refused_in_one_line(tmp_path: Path, capsys, finished_first: bool):
    run = tmp_path / "run"
    cap = [] if finished_first else ["trainer.max_steps=3"]
    assert main([*overriding(RUN, "trainer.epochs=2", *cap), f"output_dir={run}"]) == 0
    before = snapshot(run)
    done = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    capsys.readouterr()
    assert main([*RUN, f"output_dir={run}"]) == 2
    assert the_error(capsys.readouterr().err) == (
        f"{run} has trained {done} steps, more than the 2 this command asks for: set trainer.epochs to 2 or more, "
        "or choose a new output_dir="
    )
    assert snapshot(run) == before
