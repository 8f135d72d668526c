"""Every method through the CLI on synthetic data: it trains a few steps (SwAV and DINO with multi-crop: 2
global + 2 local crops), its features are finite, and it logs the collapse monitors that
tests/test_learning.py bounds. Whether a method learns without collapsing is test_learning's question: three
steps cannot tell (an untrained ResNet-18's features already spread as much as a trained one's)."""

from __future__ import annotations

import json

import pytest
import torch

from selfsup.cli import main
from selfsup.eval.offline import evaluate
from selfsup.methods.base import METHODS
from tests.test_learning import RECIPES
from tests.test_methods import SMALL_HEADS

MULTICROP = ["views.local_crops=2", "views.local_crop_size=8"]


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_and_logs_its_collapse_monitors(tmp_path, name):
    run = tmp_path / name
    args = [
        "pretrain",
        f"method={name}",
        "data=synthetic",
        "data.subset=96",
        "views.crop_size=16",
        "trainer.batch_size=32",
        "trainer.max_steps=3",
        "trainer.progress=false",
        "trainer.log_every=1",
        "eval.every=0",
        "eval.train_subset=300",
        *SMALL_HEADS[name],
        *(MULTICROP if name in ("swav", "dino") else []),
        f"output_dir={run}",
    ]
    assert main(args) == 0
    evaluate("knn", run, "last")  # caches the backbone features read below
    features = torch.load(run / "eval" / "last" / "features-train.pt", weights_only=True)["features"]
    assert torch.isfinite(features).all()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "train/loss" in r]
    for monitor, _, _ in RECIPES[name].monitors:
        values = [r.get(f"train/{monitor}") for r in steps]
        assert all(v is not None and torch.isfinite(torch.tensor(v)) for v in values), f"{name}: {monitor} {values}"
