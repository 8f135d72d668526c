"""Smoke tests on the real data in ../shared/data (or $SELFSUP_DATA): the CIFAR-10 subset and Fashion-MNIST."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from selfsup.cli import main
from selfsup.data.sources import build_dataset
from selfsup.runs.checkpoint import load_checkpoint

REAL_DATA = Path(os.environ.get("SELFSUP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FAST = [
    "trainer.batch_size=16",
    "trainer.max_steps=2",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.log_every=1",
    "eval.every=0",
    "device=cpu",
]


@pytest.mark.skipif(not (REAL_DATA / "cifar-10-batches-py").is_dir(), reason="real CIFAR-10 subset not present")
def test_cifar10_pretrain_and_knn(tmp_path: Path, capsys):
    run = tmp_path / "cifar"
    assert (
        main(["pretrain", "data=cifar10", f"data.root={REAL_DATA}", "data.subset=200", *FAST, f"output_dir={run}"]) == 0
    )
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 2 and state["config"]["data"]["subset"] == 200
    assert main(["eval", "knn", f"run={run}", "eval.train_subset=500", "trainer.num_workers=0"]) == 0
    result = json.loads((run / "eval" / "last" / "knn.json").read_text())
    test_size = len(build_dataset("cifar10", REAL_DATA, "test"))  # what the files hold: subset or full set
    assert result["dataset"]["train_size"] == 500 and result["dataset"]["test_size"] == test_size
    # Even two steps from random init give features far above the 10% of chance on real images.
    assert result["metrics"]["top1"] > 15
    assert "run directory" in capsys.readouterr().out


@pytest.mark.skipif(not (REAL_DATA / "FashionMNIST" / "raw").is_dir(), reason="Fashion-MNIST not present")
def test_fashion_mnist_pretrain(tmp_path: Path):
    run = tmp_path / "fmnist"
    assert (
        main(
            ["pretrain", "data=fashion_mnist", f"data.root={REAL_DATA}", "data.subset=100", *FAST, f"output_dir={run}"]
        )
        == 0
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == [1, 2]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["views"]["crop_size"] == 28


@pytest.mark.skipif(not (REAL_DATA / "PennFudanPed").is_dir(), reason="Penn-Fudan is not in the shared data")
def test_pennfudan_reads_every_annotated_pedestrian():
    """The real Penn-Fudan layout: 170 images, 345 pedestrians (its readme), boxes inside the images."""
    from selfsup.data.detection import build_detection_dataset

    train = build_detection_dataset("pennfudan", REAL_DATA / "PennFudanPed", "train")
    test = build_detection_dataset("pennfudan", REAL_DATA / "PennFudanPed", "test")
    assert len(train) + len(test) == 170 and train.num_boxes + test.num_boxes == 345
    image, target = test[0]
    _, height, width = image.shape
    boxes = target["boxes"]
    assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
