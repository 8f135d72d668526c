"""Backbone registry: name -> (feature extractor without classifier, feature dimension); a user's own backbone
by `package.module:factory`."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn as nn
import torchvision.models as tvm

from selfsup.errors import UserError
from selfsup.registry import Registry
from selfsup.settings import AUTO_TRUE_FALSE, BOOL, TEXT, Declaration, Rule, optional

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
    """Build a registered backbone, or a user's from `package.module:factory`; returns the module (images ->
    [B, D] features) and D. A user's factory takes no arguments and returns the module, or (module, D)."""
    if is_factory_path(name):
        return user_backbone(name)
    return BACKBONES.get(name)(cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


def is_factory_path(name: str) -> bool:
    """Whether a backbone name is a `package.module:factory` path rather than a registered name."""
    module, _, attribute = name.partition(":")
    return bool(module) and bool(attribute) and all(part.isidentifier() for part in (*module.split("."), attribute))


def backbone_settings() -> Declaration:
    """The `backbone.*` settings: a registered network or a user's factory path, its stem and initialisation,
    and optional starting weights."""
    names = BACKBONES.names()
    return {
        "name": Rule(
            lambda v: v in names or (isinstance(v, str) and is_factory_path(v)),
            f"one of {', '.join(names)} or a factory path package.module:function",
            tuple(names),
        ),
        "cifar_stem": AUTO_TRUE_FALSE,
        "zero_init_residual": BOOL,
        "weights": optional(TEXT),
    }


def backbone_factory(path: str) -> Callable[[], nn.Module | tuple[nn.Module, int]]:
    """The callable a `package.module:factory` path names, with a one-line error for each way it can be wrong;
    config validation resolves it before a run touches its output directory."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        fix = "install it or add it to PYTHONPATH"
        raise UserError(f"backbone={path}: cannot import {module_name} ({err}); {fix}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UserError(f"backbone={path}: {module_name} has no callable {attribute!r}")
    return factory


def user_backbone(path: str) -> tuple[nn.Module, int]:
    """The backbone a user's `package.module:factory` makes, and its feature width."""
    factory = backbone_factory(path)
    made = factory()
    net, feature_dim = made if isinstance(made, tuple) else (made, None)
    if not isinstance(net, nn.Module):
        raise UserError(f"backbone={path} returned {type(net).__name__}, not a torch.nn.Module (or (module, dim))")
    if feature_dim is not None:
        return net, int(feature_dim)
    try:
        return net, infer_feature_dim(net)
    except ValueError as err:
        raise UserError(f"backbone={path}: {err} (or return (module, dim) from the factory)") from None


@torch.no_grad()
def infer_feature_dim(backbone: nn.Module, size: int = 64) -> int:
    """The width of a backbone's features, from a `num_features` / `feature_dim` attribute (timm's and
    selfsup's conventions) or else from one forward pass of two blank `size`-px images in eval mode."""
    for name in ("feature_dim", "num_features"):
        if isinstance(getattr(backbone, name, None), int):
            return getattr(backbone, name)
    training = backbone.training
    try:
        parameter = next(backbone.parameters(), None)
        device = parameter.device if parameter is not None else None
        out = backbone.eval()(torch.zeros(2, 3, size, size, device=device))
    except Exception as err:
        raise ValueError(
            f"cannot infer the backbone's feature width from a {size}-px forward pass ({err}); pass feature_dim="
        ) from err
    finally:
        backbone.train(training)
    if out.ndim != 2:
        raise ValueError(f"the backbone must map images to [B, D] features, got shape {tuple(out.shape)}")
    return out.shape[1]
