"""ViTs and any timm model as backbones, end to end through the CLI: pretrain, resume, evaluate with every task
(detection through a feature pyramid, segmentation from the deepest map), export to a file that timm loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch
from fixtures_detection import write_pennfudan
from fixtures_segmentation import write_voc
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from selfsup.cli import main
from selfsup.nets.weights import build_backbone_from_config
from selfsup.runs.checkpoint import backbone_state, load_checkpoint
from tests.fault.cli_errors import overriding

TINY = ["data=synthetic", "data.subset=64", "views.crop_size=16", "trainer.batch_size=32", "device=cpu"]
TINY += ["trainer.progress=false", "eval.every=1"]
DETECTION = ["eval.detection.format=pennfudan", "eval.detection.train_split=train", "eval.detection.epochs=1"]
DETECTION += ["eval.detection.batch_size=2", "eval.detection.min_size=64", "eval.detection.max_size=64"]
DETECTION += [
    "eval.detection.roi_batch_size=16",
    "eval.detection.rpn_test_proposals=20",
    "eval.detection.num_workers=0",
]
SEGMENTATION = ["eval.segmentation.crop_size=32", "eval.segmentation.batch_size=2", "eval.segmentation.epochs=1"]
SEGMENTATION += ["eval.segmentation.num_workers=0"]


def detects(run: Path, data: Path) -> float:
    """Fine-tune a detector on the run's last checkpoint through the CLI; its box mAP at IoU 0.5."""
    root, _ = write_pennfudan(data / "PennFudanPed")
    assert main(["eval", "detection", f"run={run}", f"eval.detection.root={root}", *DETECTION]) == 0
    result = json.loads((run / "eval" / "last" / "detection.json").read_text())
    assert result["complete"] and not (run / "eval" / "last" / "detection-state.pt").exists()
    return result["metrics"]["map_50"]


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("vit") / "run"
    args = ["pretrain", *TINY, "backbone=vit_tiny", "backbone.drop_path_rate=0.1", f"output_dir={run}"]
    assert main([*args, "trainer.epochs=1"]) == 0
    assert main([*args, "trainer.epochs=2"]) == 0  # resumes the finished epoch-1 run for one more epoch
    return run


def test_a_vit_pretrains_resumes_and_evaluates(vit_run: Path, tmp_path: Path):
    state = load_checkpoint(vit_run / "checkpoints" / "last.pt")
    assert state["step"] == 4 and state["config"]["backbone"]["name"] == "vit_tiny"
    weights = backbone_state(state)
    assert weights["pos_embed"].shape == (1, 1 + 16, 192)  # 16 px in auto 4-px patches: 16 tokens + CLS
    assert main(["eval", "knn", f"run={vit_run}"]) == 0
    result = json.loads((vit_run / "eval" / "last" / "knn.json").read_text())
    assert 0 <= result["metrics"]["top1"] <= 100
    assert 0 <= detects(vit_run, tmp_path) <= 100  # ViTDet's simple pyramid on the 4-px patch grid
    write_voc(tmp_path / "voc")
    voc = f"eval.segmentation.root={tmp_path / 'voc' / 'VOCdevkit' / 'VOC2012'}"
    assert main(["eval", "segmentation", f"run={vit_run}", voc, *SEGMENTATION]) == 0
    result = json.loads((vit_run / "eval" / "last" / "segmentation.json").read_text())
    assert 0 <= result["metrics"]["miou"] <= 100 and result["params"]["output_stride"] == "auto"


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


def test_any_timm_model_pretrains_exports_and_detects(tmp_path: Path):
    run = tmp_path / "run"
    args = ["pretrain", *overriding(TINY, "views.crop_size=32"), "method=simclr", "backbone=timm:convnext_atto"]
    assert main([*args, "trainer.epochs=1", f"output_dir={run}"]) == 0  # 32 px: ConvNeXt downsamples 32x
    assert 0 <= detects(run, tmp_path) <= 100  # torchvision's FPN over its four stages
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


# Each method's own randomness on a ViT: drop path (SimCLR), the patch masks (MAE), the momentum encoder and
# its cosine momentum (MoCo v3).
VIT_METHODS = {
    "simclr": ["backbone.drop_path_rate=0.2"],
    "mae": ["method=mae", "method.decoder_dim=32", "method.decoder_depth=1", "method.decoder_heads=2"],
    "moco_v3": ["method=moco_v3", "method.proj_hidden_dim=32", "method.proj_output_dim=16"]
    + ["method.pred_hidden_dim=32", "backbone.drop_path_rate=0.1"],
}


@pytest.mark.parametrize("method", sorted(VIT_METHODS))
def test_a_vit_method_resumes_bitwise(method: str, tmp_path: Path):
    """A run resumed from its epoch-1 checkpoint ends bitwise equal to the run that went on: the RNG that
    draws drop path and MAE's masks, and MoCo v3's momentum encoder, are all in the checkpoint."""
    args = ["pretrain", *overriding(TINY, "eval.every=0"), "backbone=vit_tiny", *VIT_METHODS[method]]
    args.append("trainer.epochs=2")
    args += ["trainer.checkpoint_every=1", "backbone.patch_size=4"]
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
    first = load_checkpoint(straight / "checkpoints" / "epoch-0001.pt")
    assert any(not torch.equal(first["model"][k], a["model"][k]) for k in a["model"])  # epoch 2 trained


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
