"""Feature levels of every backbone kind for the dense tasks, checked against independent forward passes, the
stage grouping that trainable_layers freezes by, and ViTDet's simple pyramid strides."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from torchvision.models._utils import IntermediateLayerGetter

from selfsup.errors import UserError
from selfsup.nets.backbones import build_backbone
from selfsup.nets.pyramid import SimpleFeaturePyramid, feature_levels, freeze_stages

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("cifar_stem", "strides"), [(False, [4, 8, 16, 32]), (True, [1, 2, 4, 8])])
def test_resnet_levels_are_torchvisions_layers(cifar_stem: bool, strides: list[int]) -> None:
    torch.manual_seed(0)
    net, _ = build_backbone("resnet18", cifar_stem=cifar_stem)
    levels = feature_levels(net, "detection").eval()
    reference = IntermediateLayerGetter(net, {f"layer{i}": str(i) for i in range(1, 5)}).eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ours, theirs = levels(x), list(reference(x).values())
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert levels.strides == strides and levels.channels == [64, 128, 256, 512]
    assert [m.shape[-1] for m in ours] == [96 // s for s in strides]
    assert [stage[0].split(".")[0] for stage in levels.stages] == ["layer4", "layer3", "layer2", "layer1"]


def test_convnext_levels_are_its_stages_outputs() -> None:
    torch.manual_seed(0)
    net, _ = build_backbone("timm:convnext_atto")
    levels = feature_levels(net, "detection").eval()
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        ours = levels(x)
        y, theirs = net.stem(x), []
        for stage in net.stages:  # the stages one after the other, by hand
            y = stage(y)
            theirs.append(y)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert levels.strides == [4, 8, 16, 32] and levels.channels == [40, 80, 160, 320] and not levels.plain
    # the head's norm is pruned from the copy (every parameter left is used), the caller's model keeps it
    assert "head.norm.weight" in dict(net.named_parameters())
    assert not [name for name, _ in levels.named_parameters() if ".head." in name]


def test_vit_level_is_the_normed_patch_grid() -> None:
    torch.manual_seed(0)
    net, _ = build_backbone("vit_tiny", image_size=32, patch_size=4)
    levels = feature_levels(net, "detection").eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        (grid,) = levels(x)
        tokens = net.forward_features(x)[:, 1:]  # timm's normed tokens without the CLS token
    assert levels.plain and levels.strides == [4] and levels.channels == [192]
    assert torch.allclose(grid, tokens.transpose(1, 2).reshape(2, 192, 8, 12), atol=1e-6)
    assert levels.pad(torch.zeros(1, 3, 30, 45)).shape[-2:] == (32, 48)  # to a multiple of the patch size


def test_stages_group_every_parameter_between_levels() -> None:
    """EfficientNet's levels sit at blocks 1, 2, 4 and 6: block 3 belongs to the stride-16 stage, block 5 to the
    stride-32 one, blocks 0 and the stem to none; a ViT's final norm trains with its last block."""
    net, _ = build_backbone("timm:efficientnet_b0")
    levels = feature_levels(net, "detection")
    blocks = [sorted({n.split(".")[2] for n in stage if n.startswith("model.blocks.")}) for stage in levels.stages]
    assert blocks == [["5", "6"], ["3", "4"], ["2"], ["1"]]
    vit = feature_levels(build_backbone("vit_tiny", image_size=32, patch_size=4)[0], "detection")
    assert len(vit.stages) == 12 and "model.norm.weight" in vit.stages[0]
    assert all(n.startswith("model.blocks.10.") for n in vit.stages[1])


@pytest.mark.parametrize("trainable", [0, 2, 5])
def test_freeze_stages_trains_the_deepest(trainable: int) -> None:
    levels = feature_levels(build_backbone("vit_tiny", image_size=32, patch_size=4)[0], "detection")
    freeze_stages(levels, trainable)
    trained = {n for n, p in levels.named_parameters() if p.requires_grad}
    if trainable == 5:
        assert trained == {n for n, _ in levels.named_parameters()}
    else:
        assert trained == set().union(*levels.stages[:trainable])
        assert ("model.blocks.11.mlp.fc1.weight" in trained) == (trainable > 0)
        assert "model.patch_embed.proj.weight" not in trained and "model.blocks.9.attn.qkv.weight" not in trained


@pytest.mark.parametrize("patch", [4, 8, 16])
def test_simple_pyramid_strides(patch: int) -> None:
    pyramid = SimpleFeaturePyramid(192, patch, out_channels=32)
    grid = torch.rand(1, 192, 128 // patch, 256 // patch)  # a 128 x 256 image in patches
    out = pyramid(OrderedDict(grid=grid))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(m.shape[-2:]) for m in out.values()] == [(128 // s, 256 // s) for s in (4, 8, 16, 32, 64)]
    assert {m.shape[1] for m in out.values()} == {32}


def test_unusable_backbones_are_refused() -> None:
    with pytest.raises(UserError, match=r"patch size 12 is not one: pretrain with backbone.patch_size=4, 8 or 16"):
        SimpleFeaturePyramid(192, 12)
    with pytest.raises(UserError, match=r"eval detection needs feature maps .* Sequential has none: evaluate"):
        feature_levels(nn.Sequential(nn.Flatten()), "detection")
