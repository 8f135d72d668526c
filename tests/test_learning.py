"""Every method learns and does not collapse: a short CPU run on `shapes`, a dataset whose class neither raw
pixels nor a random network can read (both near chance, 25%), must lift kNN above the same network at step 0
and pass collapse checks that a collapsed representation cannot pass. The thresholds and each recipe's
margin were measured on correct and on broken runs, in fp32 and bf16 (benchmarks/RESULTS.md, "Every method
learns"; `python benchmarks/learning_margins.py` prints them). `pytest -k NAME` runs one method's run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.data.datasets.shapes import SHAPES_SIZES, make_shapes
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.offline import evaluate
from selfsup.methods.base import METHODS
from selfsup.methods.simclr import SimCLR
from tests.fault.cli_errors import overriding
from tests.method_specs import MIN_RANK, small_cnn, spec

CHANCE = 100 / 4
NEAR_CHANCE = 15.0  # raw pixels score 33 and random networks 26-40 (8 seeds) on the test split
# The collapse bars (MIN_SPREAD, MIN_RANK) and each method's Recipe live in tests/method_specs.py and the
# method's test entry.



COMMON = [
    "data=shapes",
    "trainer.batch_size=64",
    "trainer.epochs=8",
    "trainer.progress=false",
    "trainer.log_every=1",
    "trainer.checkpoint_every=8",
    "optim.warmup_epochs=0",
    "views.crop_scale=[0.4,1.0]",
    "eval.every=0",
    "analysis.every=0",
]


@dataclass
class Outcome:
    """What a learning run measured: kNN top-1 and effective rank at step 0 and at the end, and each logged
    training metric's mean over the first and over the last 20 logged steps."""

    knn: tuple[float, float]
    rank: tuple[float, float]
    logged: dict[str, tuple[float, float]]


def effective_rank(features: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the singular values of the feature matrix, divided
    by their sum; about 1 when every image maps to one point or to one line, up to D when features fill D
    dimensions evenly."""
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum()
    return float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))


def score(run: Path, checkpoint: str) -> tuple[float, float]:
    top1 = evaluate("knn", run, checkpoint, ["eval.knn.k=20"])["metrics"]["top1"]
    features = torch.load(run / "eval" / checkpoint / "features-train.pt", weights_only=True)["features"]
    return top1, effective_rank(features)


def learn(run: Path, name: str, extra: list[str] = ()) -> Outcome:
    recipe = spec(name).learning
    args = overriding(COMMON, *recipe.backbone, *recipe.overrides, *extra)
    assert main(["pretrain", *args, f"output_dir={run}"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train/loss" in r]
    keys = {k.removeprefix("train/") for r in steps for k in r if k.startswith("train/")}
    logged = {}
    for key in keys:
        values = [r[f"train/{key}"] for r in steps if f"train/{key}" in r]
        logged[key] = (float(np.mean(values[:20])), float(np.mean(values[-20:])))
    (knn0, rank0), (knn1, rank1) = score(run, "epoch-0000"), score(run, "last")
    return Outcome((knn0, knn1), (rank0, rank1), logged)


def failures(name: str, outcome: Outcome) -> list[str]:
    """Every bar `outcome` misses, in words; [] for a run that learned without collapsing."""
    recipe = spec(name).learning
    (before, after), found = outcome.knn, []
    if abs(before - CHANCE) >= NEAR_CHANCE:
        found.append(f"step-0 kNN {before:.1f} is not near chance")
    if after < before + recipe.margin:
        found.append(f"kNN {before:.1f} -> {after:.1f}, less than {recipe.margin} points gained")
    first, last = outcome.logged["loss"]
    if recipe.loss_decreases and not last < first:
        found.append(f"the loss did not decrease (first 20 steps {first:.4f}, last 20 {last:.4f})")
    if outcome.rank[1] < MIN_RANK:
        found.append(f"the representation collapsed: effective rank {outcome.rank[1]:.2f} < {MIN_RANK}")
    for metric, side, bar in recipe.monitors:
        value = outcome.logged[metric][1]
        if (value < bar) if side == "min" else (value > bar):
            found.append(f"{metric} ended at {value:.3f}, {'below' if side == 'min' else 'above'} its bar {bar:.3f}")
    return found


def with_constant_loss(forward):
    """A method forward whose loss is replaced by loss x 0 + 1: gradients zero, the run optimises nothing."""

    def constant_loss(self, views: list[torch.Tensor], schedule=None) -> dict[str, torch.Tensor]:
        out = forward(self, views, schedule)
        return {**out, "loss": out["loss"] * 0 + 1}

    return constant_loss


def test_shapes_are_unreadable_from_pixels_and_by_a_random_network():
    train_set, test_set = make_shapes(SHAPES_SIZES["train"], 0), make_shapes(SHAPES_SIZES["test"], 0, split_key=1)
    images = [(torch.from_numpy(ds.images).float() / 255 - 0.3) / 0.23 for ds in (train_set, test_set)]
    labels = [torch.from_numpy(ds.labels) for ds in (train_set, test_set)]

    def top1(train_feats: torch.Tensor, test_feats: torch.Tensor) -> float:
        return knn_accuracy(train_feats, labels[0], test_feats, labels[1], 4, k=20)["top1"]

    assert abs(top1(*(x.flatten(1) for x in images)) - CHANCE) < NEAR_CHANCE
    torch.manual_seed(0)
    net, _ = small_cnn()
    with torch.no_grad():
        assert abs(top1(*(net.eval()(x) for x in images)) - CHANCE) < NEAR_CHANCE


def test_collapse_monitors_tell_collapsed_from_spread_features():
    torch.manual_seed(0)
    spread_out = torch.randn(500, 64)
    one_point = torch.randn(1, 64) + 1e-3 * torch.randn(500, 64)
    one_line = torch.randn(500, 1) * torch.randn(1, 64) + 1e-3 * torch.randn(500, 64)
    assert effective_rank(spread_out) > 40
    assert max(effective_rank(one_point), effective_rank(one_line)) < 1.5 < MIN_RANK


@pytest.mark.parametrize("name", METHODS.names())
def test_method_learns_shapes_without_collapse(tmp_path, name):
    outcome = learn(tmp_path / name, name)
    assert failures(name, outcome) == [], f"{name}: {outcome}"


def test_a_constant_loss_fails_the_learning_bar(tmp_path, monkeypatch):
    """The bar above is not met by training that optimises nothing: SimCLR with its loss times 0 plus 1."""
    monkeypatch.setattr(SimCLR, "forward", with_constant_loss(SimCLR.forward))
    outcome = learn(tmp_path / "constant", "simclr")
    assert any("points gained" in failure for failure in failures("simclr", outcome))
