"""eval.online_linear: a linear classifier trained alongside pretraining, scored with the kNN monitor, saved
with the run, drawn in the report, and invisible to the pretraining itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from selfsup.cli import main
from selfsup.runs.checkpoint import load_checkpoint
from tests.fault.cli_errors import overriding

TINY = ["data=synthetic", "data.subset=256", "views.crop_size=16", "trainer.batch_size=32", "device=cpu"]
TINY += ["method.proj_hidden_dim=32", "method.proj_output_dim=16", "trainer.progress=false", "eval.every=1"]
TINY += ["trainer.epochs=2", "eval.train_subset=256", "trainer.num_workers=0", "trainer.precision=32"]


def monitors(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "monitor/knn_top1" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("probe")
    assert main(["pretrain", *TINY, f"output_dir={root / 'without'}"]) == 0
    assert main(["pretrain", *TINY, "eval.online_linear=true", f"output_dir={root / 'with'}"]) == 0
    return root / "without", root / "with"


def test_the_probe_leaves_the_pretraining_bitwise_unchanged(runs: tuple[Path, Path]):
    without, with_probe = (load_checkpoint(run / "checkpoints" / "last.pt") for run in runs)
    assert without["model"].keys() == with_probe["model"].keys()
    assert all(torch.equal(without["model"][k], with_probe["model"][k]) for k in without["model"])  # BN stats too
    assert "online_linear" in with_probe and "online_linear" not in without
    # the kNN monitor, which reads the same weights, agrees to the last digit
    assert [r["monitor/knn_top1"] for r in monitors(runs[0])] == [r["monitor/knn_top1"] for r in monitors(runs[1])]


def test_the_probe_learns_the_classes_and_is_scored_every_eval_epoch(runs: tuple[Path, Path]):
    records = monitors(runs[1])
    assert [r["epoch"] for r in records] == [1, 2]
    # synthetic classes differ in colour, which a linear probe on even a barely trained ResNet separates
    # (10 classes: chance is 10%); the probe starts at chance, so these are what 16 SGD steps learned
    assert records[-1]["monitor/linear_top1"] > 25
    assert all("monitor/linear_top1" not in r for r in monitors(runs[0]))


def test_a_run_with_the_probe_resumes_bitwise(runs: tuple[Path, Path], tmp_path: Path):
    resumed = tmp_path / "resumed"
    shutil.copytree(runs[1], resumed)
    for name in ("last.pt", "epoch-0002.pt"):
        (resumed / "checkpoints" / name).unlink()
    assert main(["pretrain", *TINY, "eval.online_linear=true", f"output_dir={resumed}"]) == 0
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt")["online_linear"] for run in (runs[1], resumed))
    assert all(torch.equal(a["classifier"][k], b["classifier"][k]) for k in a["classifier"])
    assert monitors(resumed)[-1]["monitor/linear_top1"] == monitors(runs[1])[-1]["monitor/linear_top1"]


def test_the_report_draws_the_online_monitors(runs: tuple[Path, Path], tmp_path: Path):
    out = tmp_path / "report"
    for run in runs:
        assert main(["eval", "knn", f"run={run}"]) == 0
    assert main(["report", f"runs=[{runs[0]},{runs[1]}]", f"out={out}"]) == 0
    assert (out / "monitor-linear_top1.png").is_file() and (out / "monitor-knn_top1.png").is_file()
    assert "online linear top1 against training step" in (out / "index.html").read_text()


def test_the_probe_needs_the_monitor(tmp_path: Path, capsys):
    args = overriding(TINY, "eval.every=0", "eval.online_linear=true")
    assert main(["pretrain", *args, f"output_dir={tmp_path / 'r'}"]) == 2
    assert "set eval.every > 0" in capsys.readouterr().err and not (tmp_path / "r").exists()
