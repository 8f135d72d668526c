"""Every method through the CLI on synthetic data: it trains and its representation has not collapsed.
SwAV and DINO run with multi-crop (2 global + 2 local crops). Whether a method learns is
tests/test_learning.py's question: the synthetic classes differ in colour, which raw pixels already read."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.cli import main
from selfsup.eval.offline import evaluate
from selfsup.methods.base import METHODS
from tests.test_methods import SMALL_HEADS

MULTICROP = ["views.local_crops=2", "views.local_crop_size=8"]


def spread(features: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised features, times sqrt(dim): ~1 for isotropic features,
    0 for a collapsed representation (every image mapped to one direction)."""
    z = F.normalize(features.float(), dim=1)
    return float(z.std(dim=0).mean() * math.sqrt(z.shape[1]))


def test_spread_detects_collapse():
    assert spread(torch.ones(50, 8) + 1e-7 * torch.randn(50, 8)) < 1e-4
    assert spread(torch.randn(2000, 64)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_without_collapse(tmp_path, name):
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
    assert spread(features) > 0.05, f"{name}: representation collapsed (spread {spread(features):.4f})"
