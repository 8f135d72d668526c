"""Multi-scale feature maps of any backbone, for the dense transfer tasks (detection, segmentation).

- A torchvision ResNet gives layer1..layer4.
- A hierarchical timm model (ConvNeXt, Swin, RegNet, EfficientNet, timm's ResNets, ...) gives its last four
  feature levels of stride >= 4 through `forward_intermediates`, the API behind timm's `features_only`, here on
  the already trained model; the layers after the last level are pruned away.
- A plain ViT (every level at the patch stride) gives one map, its patch tokens on their grid after the final
  norm; `SimpleFeaturePyramid` (ViTDet, Li et al. 2022) turns it into strides 4, 8, 16 and 32.

`FeatureLevels.stages` lists the parameters of each stage, deepest first, so that `freeze_stages` can train only the
deepest N stages as torchvision's `trainable_layers` does for ResNets.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torch import Tensor

from selfsup.errors import UserError

ALL_STAGES = 5  # trainable_layers at its maximum: the whole backbone, stem included (torchvision's convention)
PYRAMID_STRIDES = (4, 8, 16, 32)  # ViTDet's simple pyramid, for any power-of-two patch size
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


class FeatureLevels(nn.Module):
    """images [B, 3, H, W] -> feature maps, shallow to deep. `channels` and `strides` (input pixels per
    feature-map cell) per level; `stages`: the parameter names of each stage, deepest first;
    `plain`: one map at the patch stride (a ViT), which needs inputs padded to a multiple of it."""

    channels: list[int]
    strides: list[int]
    stages: list[tuple[str, ...]]
    plain: bool = False

    def pad(self, images: Tensor) -> Tensor:
        """Zero-pad the bottom and right to a multiple of the deepest stride where the model needs it (a ViT's
        patches); convolutional models take any size."""
        if not self.plain:
            return images
        stride = self.strides[-1]
        height, width = images.shape[-2:]
        return F.pad(images, (0, -width % stride, 0, -height % stride))


class ResNetLevels(FeatureLevels):
    """layer1..layer4 of a torchvision ResNet (any stem, so the CIFAR stem's stride-1 levels too)."""

    def __init__(self, net: tvm.ResNet) -> None:
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", *RESNET_STAGES):
            self.add_module(name, getattr(net, name))
        stem = self.conv1.stride[0] * (2 if isinstance(self.maxpool, nn.MaxPool2d) else 1)
        self.channels = [_last_conv_channels(getattr(self, name)) for name in RESNET_STAGES]
        self.strides = [stem * 2**i for i in range(len(RESNET_STAGES))]
        self.stages = stage_parameters(self, list(RESNET_STAGES))

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        maps = []
        for name in RESNET_STAGES:
            x = getattr(self, name)(x)
            maps.append(x)
        return maps


class TimmLevels(FeatureLevels):
    """The feature levels of a timm model through `forward_intermediates`: the last four of stride >= 4 of a
    hierarchical model, or the last block's patch grid (after the final norm) of a plain ViT."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        info = list(model.feature_info)
        self.plain = len({level["reduction"] for level in info}) == 1
        wanted = [len(info) - 1] if self.plain else [i for i, f in enumerate(info) if f["reduction"] >= 4][-4:]
        model.prune_intermediate_layers(wanted, prune_norm=not self.plain, prune_head=True)
        self.model, self.indices = model, wanted
        self.channels = [info[i]["num_chs"] for i in wanted]
        self.strides = [info[i]["reduction"] for i in wanted]
        # a ViT's stages are its blocks; a hierarchical model's, its levels
        self.stages = stage_parameters(
            self, [f"model.{info[i]['module']}" for i in (range(len(info)) if self.plain else wanted)]
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.model.forward_intermediates(
            images, indices=self.indices, norm=self.plain, output_fmt="NCHW", intermediates_only=True
        )


def stage_parameters(module: nn.Module, stage_modules: list[str]) -> list[tuple[str, ...]]:
    """The parameter names of each stage, deepest first: those inside its module, and those between the previous
    stage's module and its own (e.g. EfficientNet's blocks between two levels); parameters after the last stage
    (a ViT's final norm) belong to it, those before the first (the stem) to none."""
    stages: list[list[str]] = [[] for _ in stage_modules]
    pending: list[str] = []
    started = False
    for name, _ in module.named_parameters():
        inside = [i for i, prefix in enumerate(stage_modules) if name.startswith(prefix + ".")]
        if inside:
            stages[inside[0]] += pending if started else []
            pending, started = [], True
            stages[inside[0]].append(name)
        elif started:
            pending.append(name)
    stages[-1] += pending
    return [tuple(names) for names in reversed(stages)]


def _last_conv_channels(layer: nn.Module) -> int:
    """Channels a ResNet stage emits: its last convolution's (BasicBlock or Bottleneck, any width)."""
    return [m for m in layer.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def feature_levels(backbone: nn.Module, task: str) -> FeatureLevels:
    """The multi-scale features of a copy of `backbone` (the caller's module is left as it is); any other
    backbone than a torchvision ResNet or a timm model is refused in one line naming what works."""
    net = copy.deepcopy(backbone)
    if isinstance(net, tvm.ResNet):
        return ResNetLevels(net)
    if hasattr(net, "feature_info") and hasattr(net, "forward_intermediates"):
        return TimmLevels(net)
    raise UserError(
        f"eval {task} needs feature maps at several strides, from a torchvision ResNet or a timm model "
        f"(timm:<model>, vit_*); {type(backbone).__name__} has none: evaluate it with knn, linear or finetune"
    )


def freeze_stages(levels: FeatureLevels, trainable: int) -> None:
    """Train only the deepest `trainable` stages (ResNet: layer4, layer3, ...; timm: its feature stages; ViT:
    its blocks), or at ALL_STAGES the whole backbone with its stem, as torchvision's trainable_layers."""
    if trainable >= ALL_STAGES:
        return
    trained = {name for stage in levels.stages[:trainable] for name in stage}
    for name, param in levels.named_parameters():
        if name not in trained:
            param.requires_grad_(False)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ViTDet's norm in the simple pyramid)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _rescale(channels: int, factor: float) -> tuple[nn.Module, int]:
    """ViTDet's resampling of the patch grid by a power of two: 2x2 transposed convolutions (halving the
    channels, LayerNorm + GELU between them) to upsample, 2x2 max-pooling to downsample."""
    if factor < 1:
        return nn.MaxPool2d(round(1 / factor)), channels
    layers: list[nn.Module] = []
    for i in range(round(math.log2(factor))):
        if i:
            layers += [LayerNorm2d(channels), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, channels // 2, kernel_size=2, stride=2))
        channels //= 2
    return nn.Sequential(*layers), channels


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: the ViT's single map at the patch stride, resampled to strides 4, 8, 16
    and 32, each projected to `out_channels` by a 1x1 and a 3x3 convolution with LayerNorm, plus a stride-64
    level max-pooled from the last (the RPN's extra level, as torchvision's LastLevelMaxPool). No top-down path:
    ViTDet finds it unnecessary for a plain backbone."""

    def __init__(self, channels: int, patch_stride: int, out_channels: int = 256) -> None:
        super().__init__()
        if patch_stride & (patch_stride - 1) or not 1 <= patch_stride <= 64:
            raise UserError(
                f"detection on a ViT resamples its patch grid by powers of two; patch size {patch_stride} is not "
                f"one: pretrain with backbone.patch_size=4, 8 or 16"
            )
        self.branches = nn.ModuleList()
        for stride in PYRAMID_STRIDES:
            rescale, width = _rescale(channels, patch_stride / stride)
            self.branches.append(
                nn.Sequential(
                    rescale,
                    nn.Conv2d(width, out_channels, kernel_size=1, bias=False),
                    LayerNorm2d(out_channels),
                    nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    LayerNorm2d(out_channels),
                )
            )
        self.out_channels = out_channels

    def forward(self, maps: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:
        (grid,) = maps.values()
        out = OrderedDict((str(i), branch(grid)) for i, branch in enumerate(self.branches))
        out["pool"] = F.max_pool2d(out[str(len(self.branches) - 1)], kernel_size=1, stride=2)
        return out


def pyramid_levels(levels: FeatureLevels) -> int:
    """How many maps the detection pyramid over `levels` has, its max-pooled extra level included."""
    return (len(PYRAMID_STRIDES) if levels.plain else len(levels.channels)) + 1
