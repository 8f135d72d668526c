"""selfsup as a library: the README's snippet runs as written, every method builds in plain Python with its
defaults (and the YAML presets name exactly the constructor's options) and refuses an argument outside its
declared rule, options in epochs refuse a schedule without steps_per_epoch, and the augmentations take uint8
or float tensors."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import selfsup
from selfsup.config import load_config
from selfsup.methods.base import METHODS, Schedule
from selfsup.methods.build import method_options
from selfsup.nets.weights import build_backbone_from_config
from selfsup.settings import Rule, declaration
from tests.method_specs import spec

README = Path(__file__).parents[1] / "README.md"
METHOD_CONFIGS = sorted(p.stem for p in (Path(selfsup.__file__).parent / "conf" / "method").glob("*.yaml"))


def readme_snippet() -> str:
    text = README.read_text()
    match = re.search(r"<!-- library-snippet[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its library snippet"
    return match.group(1)


def test_the_readme_library_snippet_trains_simclr(one_thread):
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(readme_snippet(), str(README), "exec"), namespace)
    method, features = namespace["method"], namespace["features"]
    assert features.shape == (8, 512) and torch.isfinite(features).all()
    assert torch.isfinite(namespace["loss"]) and namespace["total"] == 4
    assert method.feature_dim == 512 and method.projector[0].in_features == 512
    assert method.backbone.conv1.weight.grad is not None  # the backbone was trained through the loss


class TinyNet(nn.Module):
    """A user's own backbone: images -> [B, 24] features, with no attribute naming the width."""

    def __init__(self) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)


SMALL = {  # keep the heads small; everything else is the constructor's paper default
    "SimCLR": {"proj_hidden_dim": 32},
    "MoCo": {"proj_hidden_dim": 32, "queue_size": 64},
    "BYOL": {"proj_hidden_dim": 32, "predictor": {"hidden_dim": 32}},
    "SimSiam": {"proj_hidden_dim": 32, "proj_output_dim": 32, "predictor": {"hidden_dim": 16}},
    "SwAV": {"proj_hidden_dim": 32, "num_prototypes": 16},
    "VICReg": {"proj_hidden_dim": 32, "proj_output_dim": 32},
    "BarlowTwins": {"proj_hidden_dim": 32, "proj_output_dim": 32},
    "DINO": {"proj_hidden_dim": 32, "bottleneck_dim": 8, "out_dim": 32},
    "BetaVAE": {"latent_dim": 8, "decoder_channels": 16, "image_size": 16},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_method_trains_in_plain_python_on_a_users_backbone(name):
    torch.manual_seed(0)
    method = getattr(selfsup, name)(TinyNet(), **SMALL[name])
    assert method.feature_dim == 24  # found by a forward pass
    views = [torch.randn(8, 3, 16, 16) for _ in range(1 if name == "BetaVAE" else 2)]
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05)
    before = [p.detach().clone() for p in method.backbone.parameters()]
    for step in range(2):
        schedule = Schedule(step, total_steps=2, steps_per_epoch=1)
        loss = method(views, schedule=schedule)["loss"]
        optimizer.zero_grad()
        loss.backward()
        method.drop_frozen_gradients(schedule)
        optimizer.step()
        method.after_optimizer_step(step, 2)
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, method.backbone.parameters(), strict=True))


# Options given in epochs, and what reads them: forward, or the drop of frozen parameters' gradients.
EPOCH_OPTIONS = [
    ("SwAV", {}, "freeze_prototypes_epochs=1"),
    ("DINO", {}, "freeze_last_layer_epochs=1"),
    (
        "DINO",
        {"freeze_last_layer_epochs": 0, "warmup_teacher_temperature_epochs": 10},
        "warmup_teacher_temperature_epochs=10",
    ),
    ("BetaVAE", {"capacity": 5.0, "image_size": 16}, "the capacity ramp over capacity_epochs=50"),
]


def run_a_step(method, schedule):
    views = [torch.randn(4, 3, 16, 16) for _ in range(1 if isinstance(method, selfsup.BetaVAE) else 2)]
    method(views, schedule=schedule)
    method.drop_frozen_gradients(schedule)


@pytest.mark.parametrize(("name", "options", "needs"), EPOCH_OPTIONS)
def test_a_method_that_needs_the_schedule_refuses_to_run_without_it(name, options, needs):
    method = getattr(selfsup, name)(TinyNet(), **{**SMALL[name], **options})
    with pytest.raises(ValueError, match=f"{name} needs the training schedule for {re.escape(needs)}"):
        run_a_step(method, None)


@pytest.mark.parametrize(("name", "options", "needs"), EPOCH_OPTIONS)
def test_an_option_in_epochs_refuses_a_schedule_without_steps_per_epoch(name, options, needs):
    """No default steps_per_epoch: one would read the option's epochs as steps (DINO's last layer frozen for
    1 step, not 1 epoch) without a word."""
    method = getattr(selfsup, name)(TinyNet(), **{**SMALL[name], **options})
    with pytest.raises(ValueError, match=f"^{name} needs the schedule's steps_per_epoch for {re.escape(needs)}") as err:
        run_a_step(method, Schedule(0, 10))
    assert "Schedule(step, total_steps, steps_per_epoch)" in str(err.value) and "\n" not in str(err.value)
    run_a_step(method, Schedule(0, 10, steps_per_epoch=5))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        Schedule(0, 10).steps(1.0)


# A value each kind of rule refuses, by the words of its error text; a rule kind missing here fails the test
# below, so that a new kind comes with its bad value.
BAD_VALUES = {
    "a positive integer": 0,
    "an integer >= 0": -1,
    "a positive number": -1,
    "a number >= 0": -1,
    "a finite number": float("nan"),
    "a number in [0, 1]": 1.5,
    "a number in [0, 1)": 1.0,
    "a number in (0, 1]": 0.0,
    "true or false": "yes",
    "a non-empty string": "",
}


def bad_value(rule: Rule):
    allowed = rule.allowed.removesuffix(" or null")
    if allowed.startswith("one of "):
        return "no-such-option"
    if match := re.fullmatch(r"an integer in \[-?\d+, (-?\d+)\]", allowed):
        return int(match[1]) + 1
    assert allowed in BAD_VALUES, f"no bad value for a rule of kind {allowed!r}: add one to BAD_VALUES"
    return BAD_VALUES[allowed]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_refuses_a_keyword_outside_its_declared_rule(name):
    """`SimCLR(backbone, temperature=-1)` fails as `method.temperature=-1` does, in one line (a ValueError),
    for every keyword each registered method declares; its defaults, passed explicitly, pass. Built on the
    meta device: the paper-sized heads cost nothing."""
    cls = METHODS.get(name)
    declared = declaration(cls)
    assert declared, f"{cls.__name__} declares no settings"
    parameters = inspect.signature(cls).parameters
    defaults = {key: parameters[key].default for key in declared}
    cfg = load_config([f"method={name}", "views.crop_size=16", *spec(name).tiny])
    with torch.device("meta"):
        backbone, feature_dim = build_backbone_from_config(cfg, False)
        assert isinstance(cls(backbone, feature_dim, **defaults), cls)
        for key, rule in declared.items():
            message = f"^{cls.__name__}: {key} must be {re.escape(rule.allowed)}, got "
            with pytest.raises(ValueError, match=message) as err:
                cls(backbone, feature_dim, **{**defaults, key: bad_value(rule)})
            assert "\n" not in str(err.value)


def test_methods_without_a_schedule_dependence_run_without_one():
    method = selfsup.SimCLR(TinyNet(), proj_hidden_dim=16)
    assert torch.isfinite(method([torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)])["loss"])


@pytest.mark.parametrize("config", METHOD_CONFIGS)
def test_each_method_preset_names_exactly_its_constructors_options(config):
    cfg = load_config([f"method={config}"])
    constructor = METHODS.get(cfg.method.name)
    keywords = {
        name
        for name, p in inspect.signature(constructor.__init__).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name != "pixel_stats"
    }
    assert set(method_options(cfg.method)) == keywords


def test_the_batched_augmentations_take_uint8_and_float_images():
    images = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = {"num": 2, "crop_size": 16, "jitter_p": 1.0, "grayscale_p": 0.5, "solarize_p": 0.5}
    crops = {}
    for dtype, x in ((torch.uint8, images), (torch.float32, images.float() / 255)):
        torch.manual_seed(1)  # the same boxes, flips and colour parameters for both
        crops[dtype] = selfsup.BatchCropFlip(views)(x)
        assert crops[dtype].shape == (6, 2, 3, 16, 16) and crops[dtype].dtype == dtype
    # The same crops: the uint8 path rounds to whole levels, the float path keeps them.
    assert (crops[torch.float32] * 255 - crops[torch.uint8].float()).abs().max() <= 0.5 + 1e-3
    augment = selfsup.BatchAugment(views, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = {}
    for dtype in crops:
        torch.manual_seed(2)
        out[dtype] = augment(crops[dtype][:, 1], view=1)
        assert out[dtype].dtype == torch.float32 and out[dtype].shape == (6, 3, 16, 16)
    # Colour ops on both within the rounding of the uint8 crops (solarize can flip a pixel at its threshold).
    close = (out[torch.float32] - out[torch.uint8]).abs() <= 4 * 0.5 / 255 / 0.25 + 1e-4
    assert close.float().mean() > 0.99


USER_NETS = '''
import torch.nn as nn


def small_cnn():
    """A user's backbone: images -> [B, 16] features."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten())


not_a_factory = 3
'''


def test_a_users_backbone_by_factory_path_pretrains_and_evaluates_from_the_cli(tmp_path, monkeypatch, capsys):
    from selfsup.cli import main

    (tmp_path / "user_nets_pkg").mkdir()
    (tmp_path / "user_nets_pkg" / "__init__.py").write_text("")
    (tmp_path / "user_nets_pkg" / "nets.py").write_text(USER_NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    args = ["pretrain", "data=synthetic", "data.subset=64", "trainer.batch_size=32", "trainer.epochs=1", "device=cpu"]
    args += ["method.proj_hidden_dim=16", "trainer.progress=false", "eval.every=0", f"output_dir={run}"]
    assert main([*args, "backbone=user_nets_pkg.nets:small_cnn"]) == 0
    assert "backbone.name=user_nets_pkg.nets:small_cnn" not in capsys.readouterr().err
    assert load_config(["backbone=user_nets_pkg.nets:small_cnn"]).backbone.name == "user_nets_pkg.nets:small_cnn"
    # Read from the run's files, the factory is refused; named again on the command line, it is trusted.
    factory = "user_nets_pkg.nets:small_cnn"
    evaluation = ["eval", "knn", f"run={run}", "eval.knn.k=5", "eval.train_subset=64"]
    assert main(evaluation) == 2
    assert f"add backbone.name={factory} to this command" in capsys.readouterr().err
    assert main([*evaluation, f"backbone.name={factory}"]) == 0
    assert "knn on synthetic test: top1" in capsys.readouterr().out
    export = ["export", "backbone", f"run={run}", f"out={tmp_path / 'backbone.safetensors'}"]
    assert main(export) == 2 and f"backbone.name={factory}" in capsys.readouterr().err
    assert main([*export, f"backbone.name={factory}"]) == 0
    # Each way a factory path can be wrong is one line naming the fix.
    for path, message in [
        ("no_such_pkg.nets:f", "cannot import no_such_pkg.nets"),
        ("user_nets_pkg.nets:missing", "has no callable 'missing'"),
        ("user_nets_pkg.nets:not_a_factory", "has no callable 'not_a_factory'"),
    ]:
        assert main([*args[:-1], f"output_dir={tmp_path / 'bad'}", f"backbone={path}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"backbone={path}: " in err[0] and message in err[0]
        assert not (tmp_path / "bad").exists()  # refused before anything was written
