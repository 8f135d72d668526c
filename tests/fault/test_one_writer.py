"""One writer per run directory: two pretrainings on one output_dir used to both exit 0 with their
metrics.jsonl records interleaved (steps 1,1,2,2,3,4,3,4). The second now refuses in one line naming the
holder's PID and host; a lock file left by a killed process does not block; readers need no lock."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.runs.lock import LOCK_NAME

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["pretrain", "data=synthetic", "data.subset=64", "views.crop_size=16", "trainer.batch_size=16"]
RUN += ["trainer.num_workers=0", "trainer.progress=false", "trainer.log_every=1", "method.proj_hidden_dim=64"]
RUN += ["eval.every=0", "analysis.every=0", "device=cpu"]
HOLD = "import sys, time; from pathlib import Path; from selfsup.runs.lock import run_lock\n"
HOLD += "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(600)"
# A training that waits after each metrics record until the file `go` exists: a deterministic window in which
# a second command meets it mid-run.
PAUSED = "import sys, time; from pathlib import Path; from selfsup.cli import main; from selfsup.train import loop\n"
PAUSED += "write = loop.MetricsLog.write\n"
PAUSED += "def paused(self, step, record):\n    write(self, step, record)\n"
PAUSED += "    while not Path(sys.argv[1]).exists(): time.sleep(0.02)\n"
PAUSED += "loop.MetricsLog.write = paused\nsys.exit(main(sys.argv[2:]))"


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [r["step"] for r in map(json.loads, filter(None, lines)) if "train/loss" in r]


def start(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, *args], text=True, env=env, **kwargs)


def test_a_second_pretraining_on_a_training_run_refuses_and_the_first_is_untouched(tmp_path: Path, capsys):
    run, go = tmp_path / "run", tmp_path / "go"
    args = [*RUN, "trainer.epochs=1", f"output_dir={run}"]  # 4 steps
    first = start("-c", PAUSED, str(go), *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not logged_steps(run) and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run should wait after its first record"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pid {first.pid} on host {socket.gethostname()}" in err and err.count("\n") == 1
    assert "choose another output_dir=" in err
    go.touch()
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert logged_steps(run) == [1, 2, 3, 4]


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path: Path, capsys):
    run = tmp_path / "run"
    holder = start("-c", HOLD, str(run), stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "held"
    args = [*RUN, "trainer.max_steps=1", f"output_dir={run}"]
    assert main(args) == 2
    assert f"is being trained by pid {holder.pid} on host" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()  # refused before anything was written

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (run / LOCK_NAME).read_text().startswith(f"pid {holder.pid} ")  # the dead holder's file stays
    assert main(args) == 0
    assert (run / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} ")
    assert logged_steps(run) == [1]


def test_evaluations_read_a_run_whose_lock_is_held(tmp_path: Path):
    run = tmp_path / "run"
    assert main([*RUN, "trainer.max_steps=1", f"output_dir={run}"]) == 0
    holder = start("-c", HOLD, str(run), stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        out = tmp_path / "backbone.safetensors"
        assert main(["export", "backbone", f"run={run}", "checkpoint=epoch-0000", f"out={out}"]) == 0
        assert out.is_file()
    finally:
        holder.kill()
        holder.wait(timeout=30)
