"""What the registry-wide tests need to know about each method, declared once in the method's own test entry.

Every registered method NAME has a test entry `tests/methods/test_<module>.py` (one entry may declare several
names, e.g. BYOL's declares directpred and directcopy) holding `SPECS = {NAME: MethodSpec(...)}` beside the
method's own tests (its step equivalence with lightly or with the paper's equations written out). The tests
that every method must pass are parametrised over `METHODS.names()` and read the spec:

- tests/test_methods.py: one training step with `tiny` heads; only the online network gets gradients;
- tests/test_ddp.py: two processes equal one process on the global batch (`two_processes`);
- tests/test_resume_methods.py: a run resumed from its epoch-1 checkpoint ends bitwise equal (`resume`);
- tests/test_learning.py: the `learning` recipe gains kNN without collapsing;
- benchmarks/mutations.py: each of `mutations` is caught by `pytest -k NAME`.

A method without an entry fails `test_every_registered_method_has_a_spec`; a test it cannot take is opted out
with `OptOut(reason)`, so the reason is written where the method is. Adding a method is then three files of
code, config and tests: `selfsup/methods/<name>.py`, `selfsup/conf/method/<name>.yaml` and its entry here.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from selfsup.nets.backbones import BACKBONES

ENTRIES = Path(__file__).resolve().parent / "methods"

# Collapse bars of the learning test, between what correct and broken runs measured (benchmarks/RESULTS.md,
# "Every method learns"): correct runs end with an embedding spread of 0.27-0.99 and a representation of
# effective rank 4-16; broken runs whose embeddings collapsed (BYOL without stop-gradient, VICReg without its
# variance term, DINO without centering, SwAV without Sinkhorn) end at spread 0.003-0.056, and features that
# map every image to one point or one line have rank < 1.5.
MIN_SPREAD = 0.1  # the logged `spread` of the method's embeddings (methods.base.spread), last 20 steps
MIN_RANK = 2.0  # effective rank (RankMe) of the backbone's features of the training images


WIDTH = 16


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


SMALL_CNN, SMALL_VIT = "test-small-cnn", "test-small-vit"
# The backbones the specs name (their learning recipes; the resume test): registered on import.
for _name, _factory in ((SMALL_CNN, small_cnn), (SMALL_VIT, small_vit)):
    if _name not in BACKBONES.names():
        BACKBONES.register(_name)(lambda cifar_stem=False, zero_init_residual=False, factory=_factory: factory())


@dataclass(frozen=True)
class OptOut:
    """A registry-wide test this method does not take, and why (shown as the test's skip reason)."""

    reason: str


@dataclass(frozen=True)
class Recipe:
    """One method's learning run (tests/test_learning.py): its overrides (heads sized to the 64-d backbone, an
    optimiser that trains in 248 steps), the kNN points it must gain over its step-0 network, and the collapse
    monitors it logs that must end inside their bars: (metric, "min" | "max", bar)."""

    overrides: list[str]
    margin: float
    monitors: list[tuple[str, str, float]] = field(default_factory=lambda: [("spread", "min", MIN_SPREAD)])
    backbone: list[str] = field(default_factory=lambda: ["backbone.name=test-small-cnn"])
    loss_decreases: bool = True


@dataclass(frozen=True)
class Mutation:
    """A realistic bug for the mutation check: replace `old` (exact source, occurring exactly once, so a
    refactor that moves it fails loudly) with `new` in `path` (relative to the repository root)."""

    bug: str  # what a developer might have written
    path: str
    old: str
    new: str


@dataclass(frozen=True)
class MethodSpec:
    """A method's entry in the registry-wide tests. `tiny`: overrides that make one training step cheap on
    16-px crops (small heads, a short queue); `two_processes` and `resume`: overrides added to `tiny` for those
    tests, or an OptOut; `learning`: its learning recipe; `mutations`: at least three realistic bugs;
    `momentum_targets` and `fixed_parameters`: what tests/test_methods.py expects to get no gradient."""

    tiny: list[str]
    learning: Recipe
    mutations: list[Mutation]
    two_processes: list[str] | OptOut = field(default_factory=list)
    resume: list[str] | OptOut = field(default_factory=list)
    momentum_targets: bool = False  # whether it declares momentum pairs (EMA targets: no gradient)
    fixed_parameters: frozenset[str] = frozenset()  # other parameters that never get a gradient


@functools.cache
def specs() -> dict[str, MethodSpec]:
    """Every test entry's SPECS, by method name; a name declared twice is an error."""
    if str(ENTRIES) not in sys.path:  # import the entries under the names pytest gives them (rootdir-less)
        sys.path.insert(0, str(ENTRIES))
    found: dict[str, MethodSpec] = {}
    for path in sorted(ENTRIES.glob("test_*.py")):
        declared = importlib.import_module(path.stem).SPECS
        twice = set(found) & set(declared)
        assert not twice, f"{path.name} declares {sorted(twice)} again"
        found.update(declared)
    return found


def spec(name: str) -> MethodSpec:
    entries = specs()
    assert name in entries, (
        f"method {name!r} has no test entry: add SPECS = {{{name!r}: MethodSpec(...)}} to "
        f"tests/methods/test_<its module>.py (see tests/method_specs.py)"
    )
    return entries[name]


def opted_in(value: list[str] | OptOut) -> list[str]:
    """The overrides of a test the method takes; skips the calling test, with the reason, if it opted out."""
    if isinstance(value, OptOut):
        import pytest

        pytest.skip(value.reason)
    return value
