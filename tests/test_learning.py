"""Every method family learns: a short CPU run on `shapes`, a dataset whose class neither raw pixels nor a
random network can read (both near chance, 25%), must lift kNN well above the same network at step 0, with
the loss going down. A method whose loss is a constant stays at its random-init score and fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from selfsup.cli import main
from selfsup.data.datasets.shapes import SHAPES_SIZES, make_shapes
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.offline import evaluate
from selfsup.methods.simclr import SimCLR
from selfsup.nets.backbones import BACKBONES

WIDTH = 16
CHANCE = 100 / 4
MARGIN = 8.0  # kNN points a trained run must gain over its own step-0 network
NEAR_CHANCE = 15.0  # raw pixels score 33 and random networks 26-40 (8 seeds) on the test split


def small_cnn() -> tuple[nn.Module, int]:
    """Five 3x3 conv-BN-ReLU blocks (two with stride 2) and global pooling: big enough to learn shape on
    24 px images, small enough that a learning run costs seconds on one CPU thread."""
    widths = [WIDTH, 2 * WIDTH, 2 * WIDTH, 4 * WIDTH, 4 * WIDTH]
    strides = [1, 2, 1, 2, 1]
    layers: list[nn.Module] = []
    channels = 3
    for width, stride in zip(widths, strides, strict=True):
        layers += [nn.Conv2d(channels, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels


def small_vit() -> tuple[nn.Module, int]:
    """timm's ViT at 24 px with 4-px patches (36 tokens), width 64, 4 blocks, features by mean pooling: MAE's
    encoder at a size that trains in seconds."""
    from timm.models.vision_transformer import VisionTransformer

    net = VisionTransformer(
        img_size=24, patch_size=4, embed_dim=WIDTH * 4, depth=4, num_heads=4, num_classes=0, global_pool="avg"
    )
    return net, net.num_features


for _name, _factory in (("test-small-cnn", small_cnn), ("test-small-vit", small_vit)):
    if _name not in BACKBONES.names():
        BACKBONES.register(_name)(lambda cifar_stem=False, zero_init_residual=False, factory=_factory: factory())

COMMON = [
    "data=shapes",
    "backbone.name=test-small-cnn",
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
# One method per family, heads sized to the 64-d backbone and optimisers tuned for 248 steps: LARS at the
# paper defaults gains BYOL and VICReg 7-9 points here, SGD 17-25 (SwAV is the exception).
FAMILIES = {
    "contrastive": ["method=simclr", "method.proj_hidden_dim=128", "optim.base_lr=1.0"],
    "momentum-predictor": [
        "method=byol",
        "method.proj_hidden_dim=128",
        "method.predictor.hidden_dim=128",
        "optim=sgd",
        "optim.base_lr=1.0",
    ],
    "clustering": ["method=swav", "method.num_prototypes=30", "method.freeze_prototypes_epochs=1", "optim.base_lr=2.4"],
    "redundancy-reduction": [
        "method=vicreg",
        "method.proj_hidden_dim=128",
        "method.proj_output_dim=128",
        "optim=sgd",
        "optim.base_lr=1.0",
    ],
    "distillation": [
        "method=dino",
        "method.proj_hidden_dim=128",
        "method.bottleneck_dim=64",
        "method.out_dim=256",
        "method.use_bn_in_head=true",
        "method.teacher_temp=0.04",
        "method.student_temp=0.2",  # at 0.1 the loss first climbs past ln(out_dim), then stalls there
        "method.momentum=0.99",  # 0.996 leaves the teacher near its init over 248 steps
        "optim=sgd",
        "optim.base_lr=0.5",
    ],
    "generative": ["method=beta_vae", "method.latent_dim=32", "method.decoder_channels=64", "method.beta=16"],
}


def knn_top1(run: Path, checkpoint: str) -> float:
    return evaluate("knn", run, checkpoint, ["eval.knn.k=20"])["metrics"]["top1"]


def train(run: Path, overrides: list[str]) -> tuple[float, float, list[float]]:
    """(kNN top-1 at step 0, after training, the logged losses)."""
    assert main(["pretrain", *COMMON, *overrides, f"output_dir={run}"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    return knn_top1(run, "epoch-0000"), knn_top1(run, "last"), losses


def loss_ends(losses: list[float]) -> tuple[float, float]:
    """Mean loss of the first and of the last 20 logged steps: what 'the loss decreased' compares."""
    return float(np.mean(losses[:20])), float(np.mean(losses[-20:]))


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


@pytest.mark.parametrize("family", FAMILIES)
def test_method_learns_shapes(tmp_path, family):
    before, after, losses = train(tmp_path / family, FAMILIES[family])
    assert abs(before - CHANCE) < NEAR_CHANCE, f"{family}: step-0 kNN {before:.1f} is not near chance"
    assert after >= before + MARGIN, f"{family}: kNN {before:.1f} -> {after:.1f}, less than {MARGIN} points gained"
    first, last = loss_ends(losses)
    assert last < first, (
        f"{family}: the loss did not decrease (mean of the first 20 steps {first:.4f}, last 20 {last:.4f})"
    )


def test_a_constant_loss_fails_the_learning_bar(tmp_path, monkeypatch):
    """The bar above is not met by training that optimises nothing: SimCLR with its loss times 0 plus 1."""
    monkeypatch.setattr(SimCLR, "forward", with_constant_loss(SimCLR.forward))
    before, after, _ = train(tmp_path / "constant", FAMILIES["contrastive"])
    assert after < before + MARGIN, f"a constant loss moved kNN {before:.1f} -> {after:.1f}"
