"""Ctrl-C (SIGINT) saves like preemption: the step finishes, last.pt is written, the run exits 130 in one line
and the same command resumes it; it used to die with a KeyboardInterrupt and lose the epoch. A second SIGINT
stops at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint
from selfsup.train.guards import StopSignals

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["pretrain", "data=synthetic", "data.subset=64", "views.crop_size=16", "trainer.batch_size=16"]
RUN += ["trainer.epochs=2", "trainer.log_every=1", "trainer.progress=false", "method.proj_hidden_dim=64"]
RUN += ["eval.every=0", "analysis.every=0", "device=cpu"]
TOTAL_STEPS = 8  # 64 images / 16 per batch x 2 epochs


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [r["step"] for r in map(json.loads, filter(None, lines)) if "train/loss" in r]


def test_sigint_saves_exits_130_and_resumes(tmp_path: Path):
    """The whole process group gets the signal, as from a terminal: loader workers too (the per-image crop
    path), which must leave it to the training process."""
    run = tmp_path / "run"
    args = [*RUN, "data.crop_on_device=false", "trainer.num_workers=1", f"output_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfsup.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    deadline = time.time() + 120
    while max(logged_steps(run), default=0) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "received SIGINT at step" in stderr and "Traceback" not in stderr
    assert 2 <= load_checkpoint(run / "checkpoints" / "last.pt")["step"] < TOTAL_STEPS
    assert main(args) == 0
    assert logged_steps(run) == list(range(1, TOTAL_STEPS + 1))


def test_a_second_sigint_stops_at_once():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # handlers run between bytecodes of the main thread
        assert signals.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
