"""An injected NaN loss under each trainer.nonfinite policy: stop, skip, rollback; never a NaN checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.methods.simclr import SimCLR
from selfsup.runs.checkpoint import load_checkpoint
from tests.fault.cli_errors import the_error

ARGS = [
    "pretrain",
    "data=synthetic",
    "data.subset=64",
    "views.crop_size=16",
    "trainer.batch_size=16",
    "trainer.epochs=2",
    "trainer.checkpoint_every_steps=2",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every=1",
    "eval.every=0",
    "analysis.every=0",
    "device=cpu",
]


@pytest.fixture
def nan_at(monkeypatch):
    """Make SimCLR's loss NaN at the given optimizer steps (0-based), each once: a transient fault."""
    pending: set[int] = set()
    forward = SimCLR.forward

    def poisoned(self, views, schedule=None):
        out = forward(self, views, schedule)
        if schedule.step in pending:
            pending.discard(schedule.step)
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(SimCLR, "forward", poisoned)
    return pending


def finite_weights(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stop_names_the_step_and_the_last_good_checkpoint(tmp_path: Path, nan_at, capsys):
    nan_at.add(4)
    run = tmp_path / "run"
    assert main([*ARGS, f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "non-finite gradients or buffers at step 5 (trainer.nonfinite=stop)" in err
    assert "last good checkpoint is" in the_error(err)
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 4 and finite_weights(state)


def test_skip_drops_the_step_and_the_run_finishes_finite(tmp_path: Path, nan_at):
    nan_at.update({2, 5})
    run = tmp_path / "run"
    assert main([*ARGS, "trainer.nonfinite=skip", f"output_dir={run}"]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 8 and finite_weights(state)
    assert state["cost"]["images_seen"] == 6 * 16  # the two skipped batches were not trained on
    skipped = [r["step"] for r in records(run) if "train/nonfinite_skips" in r]
    assert skipped == [3, 6]


def test_skip_stops_after_too_many_in_a_row(tmp_path: Path, nan_at, capsys):
    nan_at.update({1, 2, 3})
    args = [*ARGS, "trainer.nonfinite=skip", "trainer.nonfinite_max=2", f"output_dir={tmp_path / 'run'}"]
    assert main(args) == 2
    assert "non-finite gradients or buffers at step 4 (trainer.nonfinite=skip)" in capsys.readouterr().err


def test_rollback_returns_to_last_with_a_lower_lr(tmp_path: Path, nan_at, capsys):
    nan_at.add(5)  # last.pt is at step 4 (every 2 steps); step 6 fails once
    run = tmp_path / "run"
    assert main([*ARGS, "trainer.nonfinite=rollback", f"output_dir={run}"]) == 0
    assert "rolled back to last.pt with the lr x 0.5 (rollback 1)" in capsys.readouterr().err
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 8 and state["lr_scale"] == 0.5 and state["rollbacks"] == 1 and finite_weights(state)
    # The discarded steps 5 and 6 were redone and are logged once, after the rollback record at step 4.
    log = records(run)
    assert [r["step"] for r in log if "train/lr" in r] == list(range(1, 9))
    assert [(r["step"], r["train/rollbacks"]) for r in log if "train/rollbacks" in r] == [(4, 1)]


@pytest.fixture
def inf_weights_after(monkeypatch):
    """Make the optimizer update of the given steps (0-based) leave an infinite weight, with finite
    gradients: an overflowing update, which no gradient check sees."""
    pending: set[int] = set()
    calls = {"n": 0}
    step = torch.optim.SGD.step

    def overflowing(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        if calls["n"] in pending:
            pending.discard(calls["n"])
            with torch.no_grad():
                param = self.param_groups[0]["params"][0]
                param[(0,) * param.ndim] = float("inf")
        calls["n"] += 1
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", overflowing)
    return pending


@pytest.mark.parametrize("policy", ["skip", "rollback"])
def test_nonfinite_weights_roll_back_under_skip_and_rollback(tmp_path: Path, inf_weights_after, capsys, policy):
    inf_weights_after.add(5)  # last.pt is at step 4; the update of step 6 overflows
    run = tmp_path / "run"
    assert main([*ARGS, f"trainer.nonfinite={policy}", f"output_dir={run}"]) == 0
    assert (
        "step 6: non-finite weights; rolled back to last.pt with the lr x 0.5 (rollback 1)" in capsys.readouterr().err
    )
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 8 and state["lr_scale"] == 0.5 and finite_weights(state)


def test_a_blow_up_before_the_first_save_rolls_back_to_epoch_0000(tmp_path: Path, capsys):
    """The issue's repro: base_lr=1e30 overflows the first update; every rollback lands on the step-0
    checkpoint, and the final message names it rather than saying no checkpoint exists."""
    run = tmp_path / "run"
    args = [*ARGS, "optim.base_lr=1e30", "trainer.nonfinite=rollback", "trainer.nonfinite_max=2"]
    assert main([*args, f"output_dir={run}"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("rolled back to epoch-0000.pt") == 2
    assert (
        f"non-finite weights at step 1 (trainer.nonfinite=rollback); the last good checkpoint is {run}" in captured.err
    )
    assert "epoch-0000.pt; lower optim.base_lr" in the_error(captured.err)
    assert not (run / "checkpoints" / "last.pt").exists()
