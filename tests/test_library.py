"""selfsup as a library: the README's snippet runs as written, every method builds in plain Python with its
defaults (and the YAML presets name exactly the constructor's options), and the augmentations take uint8 or
float tensors."""

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


@pytest.mark.parametrize(
    ("name", "options", "needs"),
    [
        ("SwAV", {}, "freeze_prototypes_epochs=1"),
        (
            "DINO",
            {"freeze_last_layer_epochs": 0, "warmup_teacher_temperature_epochs": 10},
            "warmup_teacher_temperature_epochs=10",
        ),
        ("BetaVAE", {"capacity": 5.0, "image_size": 16}, "the capacity ramp over capacity_epochs=50"),
    ],
)
def test_a_method_that_needs_the_schedule_refuses_to_run_without_it(name, options, needs):
    method = getattr(selfsup, name)(TinyNet(), **{**SMALL[name], **options})
    views = [torch.randn(4, 3, 16, 16) for _ in range(1 if name == "BetaVAE" else 2)]
    with pytest.raises(ValueError, match=f"{name} needs the training schedule for {re.escape(needs)}"):
        method(views)  # SwAV's forward runs: it is the drop of its frozen prototypes' gradients that needs it
        method.drop_frozen_gradients(None)


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
