"""Backbone registry: name -> (feature extractor without classifier, feature dimension)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
import torchvision.models as tvm

from selfsup.registry import Registry

BACKBONES: Registry[Callable[..., tuple[nn.Module, int]]] = Registry("backbone")


def _resnet(factory: Callable[..., tvm.ResNet], cifar_stem: bool, zero_init_residual: bool) -> tuple[nn.Module, int]:
    """torchvision ResNet with its classifier removed; the CIFAR stem (3x3 stride-1 conv, no max-pool)
    keeps 32-px inputs from being downsampled to 8 px before the first block (SimCLR appendix B.9)."""
    net = factory(weights=None, zero_init_residual=zero_init_residual)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


@BACKBONES.register("resnet18")
def resnet18(cifar_stem: bool = False, zero_init_residual: bool = False) -> tuple[nn.Module, int]:
    return _resnet(tvm.resnet18, cifar_stem, zero_init_residual)


@BACKBONES.register("resnet34")
def resnet34(cifar_stem: bool = False, zero_init_residual: bool = False) -> tuple[nn.Module, int]:
    return _resnet(tvm.resnet34, cifar_stem, zero_init_residual)


@BACKBONES.register("resnet50")
def resnet50(cifar_stem: bool = False, zero_init_residual: bool = False) -> tuple[nn.Module, int]:
    return _resnet(tvm.resnet50, cifar_stem, zero_init_residual)


def use_cifar_stem(setting: bool | str, crop_size: int) -> bool:
    """`auto` picks the CIFAR stem for small images (<= 64 px), where the ImageNet stem loses too much."""
    if setting == "auto":
        return crop_size <= 64
    return bool(setting)


def build_backbone(name: str, cifar_stem: bool = False, zero_init_residual: bool = False) -> tuple[nn.Module, int]:
    """Build a registered backbone; returns the module (images -> [B, D] features) and D."""
    return BACKBONES.get(name)(cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)
