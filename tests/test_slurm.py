"""`selfsup submit`: the sbatch script submitit writes for `nodes x gpus`, a job run end to end by submitit's
local executor, and the requeue of a job signalled near its time limit."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.train.guards import requeue_on_slurm
from tests.fault.cli_errors import overriding

TINY = [
    "data=synthetic",
    "data.subset=32",
    "views.crop_size=16",
    "method.proj_hidden_dim=32",
    "method.proj_output_dim=16",
    "trainer.batch_size=16",
    "trainer.epochs=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "eval.every=0",
    "analysis.every=0",
]


def fake_command(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_submit_writes_an_sbatch_script_for_nodes_x_gpus(tmp_path: Path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"')
    fake_command(bin_dir, "srun", "exit 1")  # submitit only checks that it exists
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run = tmp_path / "run"
    args = [*overriding(TINY, "trainer.batch_size=256"), f"output_dir={run}"]
    slurm = ["slurm.nodes=2", "slurm.gpus_per_node=4", "slurm.partition=gpu", "slurm.time=600", "slurm.account=ssl"]
    assert main(["submit", "pretrain", *args, *slurm]) == 0

    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=ssl",
        "#SBATCH --time=600",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --job-name=run",
    ):
        assert line in script, line
    assert "srun" in script and "submitit.core._submit" in script
    printed = capsys.readouterr().out
    # 8 processes: the per-process batch, the global batch and the scaled lr are said before anything runs.
    assert "submitted job 4242 (slurm): 2 node(s) x 4 task(s)" in printed
    assert "8 process(es) x 32 per batch x 1 accumulation = global batch 256" in printed
    [pickled] = (run / "slurm").rglob("*_submitted.pkl")
    job = pickle.loads(pickled.read_bytes()).function
    assert job.argv[-3:] == ["trainer.devices=4", "trainer.num_nodes=2", "device=cuda"]


def test_a_local_job_trains_the_run(tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main(["submit", "pretrain", *TINY, "device=cpu", f"output_dir={run}", "slurm.cluster=local"]) == 0
    assert "finished with exit status 0" in capsys.readouterr().out
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2
    logs = list((run / "slurm").rglob("*_log.err"))
    assert logs and "selfsup pretrain: simclr / resnet18" in logs[0].read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["slurm.nodse=2"], "unknown setting slurm.nodse; did you mean 'slurm.nodes'"),
        (["slurm.nodes=two"], "slurm.nodes must be a positive integer, got 'two'"),
        (["slurm.time=0"], "slurm.time must be a positive integer, got 0"),
        (["slurm.nodes=2"], "slurm.nodes must be 1, got 2"),
        (["slurm.cluster=pbs"], "slurm.cluster must be one of slurm | local, got 'pbs'"),
        (["trainer.batch_sise=8"], "trainer.batch_sise"),
    ],
)
def test_bad_submissions_fail_in_one_line_before_anything_is_queued(args, message, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main(["submit", "pretrain", *overriding([*TINY, f"output_dir={run}", "slurm.cluster=local"], *args)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not run.exists()


def test_without_sbatch_the_error_names_the_way_out(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(["submit", "pretrain", *TINY, f"output_dir={tmp_path / 'run'}"]) == 2
    assert "sbatch and srun are not on PATH" in capsys.readouterr().err


def test_sbatch_without_srun_is_one_line(tmp_path: Path, monkeypatch, capsys):
    """submitit looks for srun when it builds its executor: without it, one line instead of a traceback."""
    fake_command(tmp_path / "bin", "sbatch", 'echo "Submitted batch job 1"')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # sbatch, no srun
    assert main(["submit", "pretrain", *TINY, f"output_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "srun is not on PATH" in err and "sbatch" not in err and "Traceback" not in err


def test_only_the_first_task_requeues_and_only_near_the_time_limit(tmp_path: Path, monkeypatch):
    calls = tmp_path / "calls"
    fake_command(tmp_path / "bin", "scontrol", f'echo "$@" >> {calls}')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert not requeue_on_slurm(signal.SIGUSR2)
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert not requeue_on_slurm(signal.SIGTERM)  # preemption: SLURM requeues by itself
    assert requeue_on_slurm(signal.SIGUSR2) and requeue_on_slurm(signal.SIGUSR1)
    assert calls.read_text().splitlines() == ["requeue 77", "requeue 77"]


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory) -> Path:
    """A tiny run with its last checkpoint's kNN, for the commands that read a run."""
    run = tmp_path_factory.mktemp("submit") / "run"
    assert main(["pretrain", *TINY, "device=cpu", f"output_dir={run}"]) == 0
    assert main(["eval", "knn", f"run={run}", "eval.train_subset=32"]) == 0
    return run


BENCH = ["stages=[compute]", "variants=[fp32]", "steps=1", "warmup=0", *TINY[:6], "device=cpu"]
# Each command's arguments and the file its job writes ({run}: the evaluated run, {out}: a fresh directory).
SUBMITTED = {
    "eval": (["knn", "run={run}", "checkpoint=epoch-0000", "eval.train_subset=32"], "{run}/eval/epoch-0000/knn.json"),
    "sweep": (
        ["run={run}", "tasks=[linear]", "eval.linear.epochs=1", "eval.train_subset=32"],
        "{run}/eval/epoch-0001/linear.json",
    ),
    "report": (["runs=[{run}]", "out={out}/report"], "{out}/report/index.html"),
    "export": (["backbone", "run={run}", "out={out}/backbone.safetensors"], "{out}/backbone.safetensors"),
    "bench": ([*BENCH, "out={out}/bench.json"], "{out}/bench.json"),
    "config": (["method=byol"], None),
    "study": (["simclr_toolbox", "smoke=true", "out={out}/study"], "{out}/study/report/index.html"),
}


def test_every_command_but_submit_can_be_submitted():
    from selfsup.cli import COMMANDS

    assert sorted(SUBMITTED) == sorted(set(COMMANDS) - {"pretrain", "submit"})  # pretrain: the tests above


@pytest.mark.parametrize("command", sorted(SUBMITTED))
def test_a_local_job_runs_any_command(command: str, evaluated_run: Path, tmp_path: Path, capsys):
    """submitit's local executor runs the command in its own process, as a SLURM task would, and the job's
    exit status is the command's."""
    args, product = SUBMITTED[command]
    fill = {"run": evaluated_run, "out": tmp_path}
    argv = [arg.format(**fill) for arg in args]
    logs = tmp_path / "logs"
    assert main(["submit", command, *argv, "slurm.cluster=local", f"slurm.folder={logs}"]) == 0
    printed = capsys.readouterr().out
    assert f"selfsup {command} " in printed and "finished with exit status 0" in printed
    if product is not None:
        assert Path(product.format(**fill)).is_file()
    [log] = logs.rglob("*_log.out")
    assert command != "config" or "name: byol" in log.read_text()


def test_a_submitted_command_runs_as_one_task_that_sees_the_gpus(tmp_path: Path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "sbatch", f'cp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 99"')
    fake_command(bin_dir, "srun", "exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run = tmp_path / "run"
    assert main(["submit", "sweep", f"run={run}", "slurm.gpus_per_node=4", "slurm.time=60"]) == 0
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4"):
        assert line in script, line
    assert "#SBATCH --job-name=selfsup-sweep" in script and (run / "slurm").is_dir()  # logs beside the run
    assert "submitted job 99 (slurm): selfsup sweep" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["submit"], "usage: selfsup submit COMMAND"),
        (["submit", "train"], "usage: selfsup submit COMMAND"),
        (["submit", "submit", "pretrain"], "usage: selfsup submit COMMAND"),
        (["submit", "sweep", "run=x", "slurm.nodes=2"], "only pretrain spreads over nodes"),
    ],
)
def test_bad_command_submissions_fail_in_one_line(args: list[str], message: str, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
