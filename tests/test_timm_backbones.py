"""ViTs and any timm model as backbones, end to end through the CLI: pretrain, resume, evaluate, export to a
file that timm itself loads; the ResNet-only transfer tasks refuse them in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from selfsup.cli import main
from selfsup.nets.weights import build_backbone_from_config
from selfsup.runs.checkpoint import backbone_state, load_checkpoint
from tests.fault.cli_errors import the_error

TINY = ["data=synthetic", "data.subset=64", "views.crop_size=16", "trainer.batch_size=32", "device=cpu"]
TINY += ["trainer.progress=false", "eval.every=1"]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vit") / "run"
    args = ["pretrain", *TINY, "backbone=vit_tiny", "backbone.drop_path_rate=0.1", f"output_dir={run}"]
    assert main([*args, "trainer.epochs=1"]) == 0
    assert main([*args, "trainer.epochs=2"]) == 0  # resumes the finished epoch-1 run for one more epoch
    return run


def test_a_vit_pretrains_resumes_and_evaluates(vit_run: Path, capsys):
    state = load_checkpoint(vit_run / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["config"]["backbone"]["name"] == "vit_tiny"
    weights = backbone_state(state)
    assert weights["pos_embed"].shape == (1, 1 + 16, 192)  # 16 px in auto 4-px patches: 16 tokens + CLS
    assert main(["eval", "knn", f"run={vit_run}"]) == 0
    result = json.loads((vit_run / "eval" / "last" / "knn.json").read_text())
    assert 0 <= result["metrics"]["top1"] <= 100
    assert main(["eval", "detection", f"run={vit_run}"]) == 2
    assert the_error(capsys.readouterr().err) == (
        "eval detection builds on a torchvision ResNet's stages (layer1-layer4); backbone=vit_tiny has none: "
        "evaluate it with knn, linear or finetune"
    )


def test_an_exported_vit_loads_into_timm_as_it_is(vit_run: Path, tmp_path: Path):
    out = tmp_path / "vit.safetensors"
    assert main(["export", "backbone", f"run={vit_run}", f"out={out}"]) == 0
    with safe_open(str(out), framework="pt") as f:
        metadata = f.metadata()
    assert metadata["architecture"] == "vit_tiny (image_size=16, patch_size=4, pool=cls)"
    model = timm.create_model(metadata["timm_model"], pretrained=False, **json.loads(metadata["timm_kwargs"]))
    model.load_state_dict(load_file(str(out)))  # strict: every key and shape as timm builds them
    state = load_checkpoint(vit_run / "checkpoints" / "last.pt")
    ours, _ = build_backbone_from_config(OmegaConf.create(state["config"]), init_weights=False)
    ours.load_state_dict(backbone_state(state))
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():  # the user's timm model computes the trained backbone's features
        assert torch.equal(model.eval()(x), ours.eval()(x)) and model(x).shape == (2, 192)


def test_any_timm_model_pretrains_and_exports(tmp_path: Path):
    run = tmp_path / "run"
    args = ["pretrain", *TINY, "views.crop_size=32", "backbone=timm:convnext_atto", "trainer.epochs=1"]
    assert main([*args, f"output_dir={run}"]) == 0  # 32 px: ConvNeXt downsamples 32x
    out = tmp_path / "convnext.safetensors"
    assert main(["export", "backbone", f"run={run}", f"out={out}"]) == 0
    with safe_open(str(out), framework="pt") as f:
        metadata = f.metadata()
    assert (metadata["backbone"], metadata["timm_model"], metadata["feature_dim"]) == (
        "timm:convnext_atto",
        "convnext_atto",
        "320",
    )
    model = timm.create_model("convnext_atto", pretrained=False, **json.loads(metadata["timm_kwargs"]))
    model.load_state_dict(load_file(str(out)))


def test_a_vit_resumes_bitwise(tmp_path: Path):
    """Drop path draws from the RNG every step: a run resumed from its epoch-1 checkpoint ends bitwise equal to
    the run that went on."""
    args = ["pretrain", *TINY, "backbone=vit_tiny", "backbone.drop_path_rate=0.2", "trainer.epochs=2"]
    args += ["trainer.checkpoint_every=1", "eval.every=0"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main([*args, f"output_dir={straight}"]) == 0
    shutil.copytree(straight, resumed)
    for name in ("last.pt", "epoch-0002.pt"):
        (resumed / "checkpoints" / name).unlink()
    assert main([*args, f"output_dir={resumed}"]) == 0
    a, b = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (straight, resumed))
    assert a["step"] == b["step"] == 4 and a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa if isinstance(sa[k], torch.Tensor))


def test_dino_vit_recipe_runs_multi_crop_on_a_vit(tmp_path: Path):
    """The DINO ViT preset, shrunk: local crops of another size go through the same ViT (its position
    embedding interpolated), with AdamW, the weight-decay cosine and gradient clipping."""
    run = tmp_path / "run"
    args = ["pretrain", *TINY, "method=dino_vit", "backbone=vit_tiny", "backbone.patch_size=4", "views.local_crops=2"]
    args += ["views.local_crop_size=8", "method.out_dim=64", "method.proj_hidden_dim=64", "method.bottleneck_dim=16"]
    assert main([*args, "trainer.epochs=1", f"output_dir={run}"]) == 0
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["config"]["trainer"]["grad_clip"] == 3.0 and state["config"]["optim"]["name"] == "adamw"
    assert {g["weight_decay"] for g in state["optimizer"]["param_groups"]} - {0.0}  # decayed groups scheduled
