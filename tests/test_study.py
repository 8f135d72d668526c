"""`selfsup study`: every shipped study's smoke version runs its whole pipeline (pretrain, sweep, report),
and study files fail in one line when they are wrong."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.study import load_study, study_names
from selfsup.train.cost import reset_peak_memory

SHIPPED = ["noncontrastive_dynamics", "simclr_moco_cifar10", "simclr_toolbox", "swav_vs_beta_vae", "vicreg_detection"]


def test_every_shipped_study_is_listed():
    assert set(SHIPPED) <= set(study_names())


@pytest.mark.parametrize("name", SHIPPED)
def test_smoke_version_runs_the_whole_pipeline_and_writes_its_report(name: str, tmp_path: Path, one_thread, capsys):
    out = tmp_path / name
    assert main(["study", name, "smoke=true", f"out={out}"]) == 0
    study = load_study(name, smoke=True)
    for run in study.runs:
        config = (out / run / "config.yaml").read_text()
        assert "name: synthetic" in config  # the smoke settings came last and won
        checkpoints = sorted(p.stem for p in (out / run / "checkpoints").glob("epoch-*.pt"))
        assert checkpoints == ["epoch-0000", "epoch-0001"]
        evaluated = checkpoints if study.checkpoints is None else checkpoints[-1:]  # `last` is the newest
        for checkpoint in evaluated:  # each checkpoint the study names, on every task of the study
            for task in study.tasks:
                result = json.loads((out / run / "eval" / checkpoint / f"{task}.json").read_text())
                assert result["complete"] and result["metrics"]
                assert all(0 <= value <= 100 for key, value in result["metrics"].items() if key != "train_loss")
    with open(out / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {Path(row["run"]).name for row in rows} == set(study.runs)  # a row per run and checkpoint
    assert (out / "report" / "index.html").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert f"[{name}] report: {out / 'report' / 'index.html'}" in printed
    if name == "noncontrastive_dynamics":  # each predictor run's eigenvalue and alignment trajectories
        assert all((out / "report" / f"dynamics-trajectories-{run}.png").is_file() for run in study.runs)
    if name == "simclr_toolbox":  # the held-out SimCLR loss of every epoch (every 25 at full scale)
        records = [json.loads(line) for line in (out / "simclr" / "metrics.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in records if "val/loss" in r] == [1]

    if name != "vicreg_detection":  # the rerun below costs a report; once is enough (that study chunks)
        return
    # Rerunning the same command redoes nothing: runs are complete, results current, chunks finished.
    assert main(["study", f"experiment={name}", "smoke=true", f"out={out}"]) == 0
    rerun = capsys.readouterr().out
    assert "already complete" in rerun and " done " not in rerun


def test_the_full_versions_compose_valid_configs():
    from selfsup.config import load_config

    cpu_copies = sorted(str(p) for p in (Path(__file__).parents[1] / "benchmarks" / "studies").glob("*.yaml"))
    assert cpu_copies  # the CPU-scale copies measured on docs/studies/ stay runnable too
    for name in [*study_names(), *cpu_copies]:
        study = load_study(name)
        for run in study.runs:
            cfg = load_config(study.run_args(run, Path("output/x"), ["data.root=/datasets/x"]))
            assert cfg.output_dir == f"output/x/{run}"


def test_only_keeps_the_named_runs_with_their_settings(monkeypatch, tmp_path: Path):
    seen = []
    monkeypatch.setattr("selfsup.study.run_study", lambda study, out, extra, **kw: seen.append((study, out, extra)))
    assert main(["study", "noncontrastive_dynamics", "only=[directcopy, byol]", f"out={tmp_path}", "seed=3"]) == 0
    (study, out, extra), full = seen[0], load_study("noncontrastive_dynamics")
    assert list(study.runs) == ["byol", "directcopy"]  # in the study's order
    assert study.runs["directcopy"] == full.runs["directcopy"] and study.tasks == full.tasks
    assert (out, extra) == (tmp_path, ["seed=3"])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["simclr_tolbox"], "unknown study 'simclr_tolbox'; did you mean 'simclr_toolbox'?"),
        ([], "say which study: selfsup study NAME"),
        (["simclr_toolbox", "smoke=maybe"], "smoke=maybe is not a boolean"),
        (["simclr_toolbox", "smoke=true", "trainer.batch_sise=8"], "trainer.batch_sise"),
        (["swav_vs_beta_vae", "only=[beta_vea]"], "only= names 'beta_vea'; did you mean 'beta_vae'?"),
        (["swav_vs_beta_vae", "only=[]"], "only= names no run; give some of swav, beta_vae, e.g. only=[swav]"),
        # The report's options are checked before the first run, not after the whole study.
        (["simclr_toolbox", "smoke=true", "hours_scale=-1"], "hours_scale=-1.0 must be a positive number"),
        (["simclr_toolbox", "smoke=true", "hours_scale=abc"], "hours_scale=abc is not a number"),
        (["simclr_toolbox", "smoke=true", "hours_ref=p4"], "hours_ref=p4 is not a reference GPU"),
        (["simclr_toolbox", "hours_ref=p40", "hours_scale=2"], "hours_ref and hours_scale both set the hours axis"),
    ],
)
def test_bad_commands_fail_in_one_line(args, message, capsys, tmp_path: Path):
    assert main(["study", *args, f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("runs: {}\n", "is not a study file: it needs a `runs:` mapping"),
        ("runs: {a: [method=simclr]}\nsweeps: {}\n", "unknown key sweeps; did you mean 'sweep'?"),
        ("runs: {a: [method=simclr]}\nsmoke: {only: [b]}\n", "smoke.only names 'b', which is not one of the runs (a)"),
        ("runs: {a: method=simclr}\n", "runs.a must be a list of key=value strings"),
        ("runs: {a: [method=simclr]}\nreport: {hours: 2}\n", "unknown key report.hours"),
        ("runs: {a: [method=simclr]}\nreport: {hours_scale: -1}\n", "hours_scale=-1 must be a positive number"),
        ("runs: {a: [method=simclr]}\nreport: {hours_scale: abc}\n", "hours_scale=abc must be a positive number"),
    ],
)
def test_bad_study_files_fail_in_one_line(text: str, message: str, tmp_path: Path, capsys):
    path = write(tmp_path / "mine.yaml", text)
    assert main(["study", str(path), "smoke=true", f"out={tmp_path / 'out'}"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["hours_ref=p40", "hours_scale=2.5", "hours_label=P40 hours"])
def test_an_hours_option_reaches_the_studys_report(option: str, monkeypatch, tmp_path: Path, capsys):
    """`hours_*` options used to crash the finished study (build_report got `overwrite` twice); the runs and
    sweeps are stubbed here: only the report call is under test."""
    reports = []
    monkeypatch.setattr("selfsup.train.loop.pretrain", lambda cfg: None)
    monkeypatch.setattr("selfsup.eval.sweep.sweep", lambda *args, **kwargs: [])
    monkeypatch.setattr("selfsup.report.build_report", lambda runs, **kwargs: reports.append(kwargs) or _Report())
    assert main(["study", "simclr_toolbox", "smoke=true", option, f"out={tmp_path}"]) == 0
    key, value = option.split("=")
    (kwargs,) = reports
    assert kwargs[key] == (float(value) if key == "hours_scale" else value)
    assert kwargs["out"] == tmp_path / "report" and kwargs["overwrite"] is True


class _Report:
    markdown, index = "| table |", "index.html"


@pytest.mark.skipif(not reset_peak_memory(torch.device("cpu")), reason="resetting the peak RSS needs Linux /proc")
def test_a_run_after_a_bigger_one_in_the_same_process_reports_its_own_peak_memory(tmp_path: Path):
    """A study pretrains its runs one after another in one process; each run's peak must be its own."""
    import numpy as np

    from selfsup.config import load_config
    from selfsup.runs.checkpoint import load_checkpoint
    from selfsup.train.loop import pretrain

    big = np.ones(3 * 2**30 // 8)  # 3 GiB touched: the process's peak so far
    del big
    cfg = load_config(
        ["data=synthetic", "data.subset=32", "views.crop_size=16", "trainer.batch_size=16", "trainer.epochs=1",
         "trainer.progress=false", "eval.every=0", "device=cpu", f"output_dir={tmp_path / 'run'}"]
    )  # fmt: skip
    pretrain(cfg)
    peak = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["cost"]["peak_memory_bytes"]
    assert 100 * 2**20 < peak < 2.5 * 2**30  # torch and a ResNet-18: under 2.5 GiB, and not the 3 GiB above
