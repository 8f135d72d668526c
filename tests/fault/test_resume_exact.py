"""A run killed (SIGKILL), preempted (SIGTERM / SIGUSR1) or left with a corrupt last.pt ends bitwise identical
to an uninterrupted run: weights, optimizer state and step, on CPU, with crops batched on the device (the
default for in-memory data) or per image in the loader."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint
from tests.fault.cli_errors import the_error

ARGS = [
    "pretrain",
    "method=byol",  # EMA target and predictor: more state than SimCLR to restore
    "method.proj_hidden_dim=64",  # small heads keep each of the ~40 checkpoints a test writes small on disk
    "method.predictor.hidden_dim=64",
    # A 64-d CNN (the learning test's), by factory path so the subprocesses import it from the repository root:
    # kilobyte checkpoints where a ResNet-18 with BYOL's target and optimizer state writes ~100 MB per step.
    "backbone=tests.method_specs:small_cnn",
    "data=synthetic",
    "data.subset=256",
    "views.crop_size=16",
    "trainer.batch_size=16",
    "trainer.epochs=3",
    "trainer.checkpoint_every=1",
    "trainer.checkpoint_every_steps=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every=1",
    "optim.warmup_epochs=1",
    "eval.every=0",
    "analysis.every=0",
    "device=cpu",
]
STEPS_PER_EPOCH = 16  # 256 images / 16 per batch
TOTAL_STEPS = 3 * STEPS_PER_EPOCH  # ~2 s of steps: a kill in the first half lands while the run goes on


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main([*ARGS, f"output_dir={run}"]) == 0
    return load_checkpoint(run / "checkpoints" / "last.pt")


def assert_same_training(a: dict, b: dict) -> None:
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"]) == (TOTAL_STEPS, 3)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))
    assert a["cost"]["images_seen"] == b["cost"]["images_seen"]


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "train/loss" in record:
            steps.append(record["step"])
    return steps


def tensorboard_steps(run: Path, tag: str = "train/loss") -> list[int]:
    """The steps of `tag` as TensorBoard shows them (its reader, purging what a restart marks stale)."""
    return [event.step for event in EventAccumulator(str(run / "tb")).Reload().Scalars(tag)]


def start(run: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "selfsup.cli", *ARGS, f"output_dir={run}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if max(logged_steps(run), default=0) >= step:
            return
        time.sleep(0.05)
    stderr = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    pytest.fail(f"training did not reach step {step} (exit {proc.poll()}): {stderr[-2000:]}")


def test_sigkill_at_random_steps_then_rerun_is_bitwise_identical(tmp_path: Path, reference: dict):
    run = tmp_path / "run"
    rng = random.Random(int(os.environ.get("SELFSUP_FAULT_SEED", "0")))
    for target in sorted(rng.sample(range(1, TOTAL_STEPS // 2), 2)):
        proc = start(run)
        wait_for_step(proc, run, target)
        time.sleep(rng.random() * 0.3)  # land inside a step, a save or a log write
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main([*ARGS, f"output_dir={run}"]) == 0
    assert_same_training(load_checkpoint(run / "checkpoints" / "last.pt"), reference)
    assert logged_steps(run) == list(range(1, TOTAL_STEPS + 1))  # every step logged once
    assert tensorboard_steps(run) == list(range(1, TOTAL_STEPS + 1))


def stop_with(signum: int, run: Path, at_step: int) -> int:
    """Start a run, send `signum` once it logged `at_step`, check its clean exit; returns the saved step."""
    proc = start(run)
    wait_for_step(proc, run, at_step)
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr
    assert f"received {signal.Signals(signum).name} at step" in stderr and "Traceback" not in stderr
    return load_checkpoint(run / "checkpoints" / "last.pt")["step"]


def test_slurm_time_limit_signal_saves_exits_with_a_requeue_status_and_resumes(tmp_path: Path, reference: dict):
    run = tmp_path / "run"
    assert 5 <= stop_with(signal.SIGUSR1, run, 5) < TOTAL_STEPS
    assert main([*ARGS, f"output_dir={run}"]) == 0
    assert_same_training(load_checkpoint(run / "checkpoints" / "last.pt"), reference)


def test_sigterm_then_a_corrupt_last_checkpoint_falls_back_to_the_newest_good_one(
    tmp_path: Path, reference: dict, capsys
):
    """SIGTERM (preemption) saves and exits like SIGUSR1; then last.pt is damaged two ways (cut in half,
    its end overwritten) and each copy of the run resumes from epoch-0001.pt to the reference weights."""
    stopped = tmp_path / "stopped"
    saved = stop_with(signal.SIGTERM, stopped, STEPS_PER_EPOCH + 2)
    assert STEPS_PER_EPOCH < saved < TOTAL_STEPS
    good = (stopped / "checkpoints" / "epoch-0001.pt").read_bytes()
    for damage in ("truncate", "flip"):
        run = tmp_path / damage
        shutil.copytree(stopped, run)
        last = run / "checkpoints" / "last.pt"
        data = last.read_bytes()
        last.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-100] + bytes(100))
        assert main([*ARGS, f"output_dir={run}"]) == 0
        out = capsys.readouterr().err
        assert "warning: checkpoint" in out and "is corrupt" in out and "resuming" in out and "epoch-0001.pt" in out
        assert (run / "checkpoints" / "epoch-0001.pt").read_bytes() == good  # the good one was never rewritten
        assert_same_training(load_checkpoint(last), reference)


def test_the_loader_crop_path_resumes_bitwise_too(tmp_path: Path, reference: dict):
    """data.crop_on_device=false: crops per image in the loader instead of batched (the path of image-file
    datasets), resumed from the end of epoch 1."""
    args = [*ARGS, "data.crop_on_device=false"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main([*args, f"output_dir={whole}"]) == 0
    shutil.copytree(whole, resumed)
    for path in (resumed / "checkpoints").iterdir():
        if not path.name.startswith(("epoch-0000", "epoch-0001")):
            path.unlink()
    assert main([*args, f"output_dir={resumed}"]) == 0
    last = load_checkpoint(whole / "checkpoints" / "last.pt")
    assert_same_training(load_checkpoint(resumed / "checkpoints" / "last.pt"), last)
    assert not torch.equal(last["model"]["backbone.0.weight"], reference["model"]["backbone.0.weight"])


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path: Path):
    """Stopped at step 12 with its checkpoint at step 4 (as a kill leaves it), the run redoes steps 5-12:
    TensorBoard drops the first segment's 5-12 (issue 37 item 8: each showed twice) as metrics.jsonl does."""
    run = tmp_path / "run"
    assert main([*ARGS, f"output_dir={run}"]) == 0
    for path in (run / "checkpoints").iterdir():
        if not path.name.startswith(("epoch-0000", "epoch-0001")):
            path.unlink()
    assert main([*ARGS, f"output_dir={run}"]) == 0
    assert logged_steps(run) == tensorboard_steps(run) == list(range(1, TOTAL_STEPS + 1))
    assert len(list((run / "tb").iterdir())) == 2  # both segments wrote events


def test_no_readable_checkpoint_at_all_is_a_one_line_error(tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main([*ARGS, "trainer.max_steps=1", f"output_dir={run}"]) == 0
    for path in (run / "checkpoints").glob("*.pt"):
        path.write_bytes(b"garbage")
    assert main([*ARGS, f"output_dir={run}"]) == 2
    assert "no readable checkpoint in" in capsys.readouterr().err


def test_unwritable_or_full_output_fails_before_training(tmp_path: Path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main([*ARGS, f"output_dir={blocker / 'run'}"]) == 2
    assert "is not writable" in capsys.readouterr().err

    def tiny_disk(_path):
        return shutil._ntuple_diskusage(total=10**9, used=10**9 - 10**6, free=10**6)

    monkeypatch.setattr(shutil, "disk_usage", tiny_disk)
    run = tmp_path / "full"
    assert main([*ARGS, f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "GiB free, less than two checkpoints" in the_error(err)
    assert not (run / "checkpoints").exists()
