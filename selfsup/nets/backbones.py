"""Backbone registry: name -> (feature extractor without classifier, feature dimension); a user's own backbone
by `package.module:factory`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torchvision.models as tvm

from selfsup.errors import UserError
from selfsup.registry import Registry
from selfsup.settings import AUTO_TRUE_FALSE, BELOW_ONE, BOOL, POSITIVE_INT, TEXT, Declaration, Rule, one_of, optional

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


# ViTs through timm (Dosovitskiy et al. 2021; DeiT's tiny/small/base widths): the timm model itself, classifier
# removed, so its state dict loads into timm.create_model(TIMM_VITS[name], **its architecture options).
TIMM_VITS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
VIT_POOLS = {"cls": "token", "mean": "avg"}  # features: the CLS token, or the mean of the patch tokens
TIMM_PREFIX = "timm:"  # backbone=timm:<model name>: any timm model


def _timm_model(model: str, **options: object) -> tuple[nn.Module, int]:
    """A timm model without its classifier (num_classes=0: images -> [B, num_features]), never pretrained:
    nothing is downloaded."""
    import timm

    net = timm.create_model(model, pretrained=False, num_classes=0, **options)
    return net, int(net.num_features)


def _vit(model: str, image_size: int, patch_size: int, pool: str, drop_path_rate: float) -> tuple[nn.Module, int]:
    if image_size % patch_size:
        raise UserError(
            f"views.crop_size={image_size} is not a multiple of backbone.patch_size={patch_size}; set one of them"
        )
    # timm's attention uses F.scaled_dot_product_attention (fused; flash attention on GPUs) by default.
    # dynamic_img_size: crops of other sizes (multi-crop's local crops) interpolate the position embedding.
    return _timm_model(
        model,
        img_size=image_size,
        patch_size=patch_size,
        global_pool=VIT_POOLS[pool],
        drop_path_rate=drop_path_rate,
        dynamic_img_size=True,
    )


def _register_vit(name: str, model: str) -> None:
    def factory(
        image_size: int = 224, patch_size: int = 16, pool: str = "cls", drop_path_rate: float = 0.0
    ) -> tuple[nn.Module, int]:
        return _vit(model, image_size, patch_size, pool, drop_path_rate)

    factory.__doc__ = f"timm's {model} at `image_size` with `patch_size` patches, features by `pool` (cls|mean)."
    BACKBONES.register(name)(factory)


for _name, _model in TIMM_VITS.items():
    _register_vit(_name, _model)


def is_timm_name(name: str) -> bool:
    return isinstance(name, str) and name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)


def timm_backbone(name: str, drop_path_rate: float = 0.0) -> tuple[nn.Module, int]:
    """`timm:<model>`: any timm model by name, its feature width from the model; an unknown name fails in one
    line with timm's closest names."""
    model = check_timm_model(name)
    options = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    return _timm_model(model, **options)


def check_timm_model(name: str) -> str:
    """The timm model `timm:<model>` names; an unknown one fails in one line with timm's closest names."""
    import timm

    from selfsup.registry import close_matches_hint

    model = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(model):
        hint = close_matches_hint(model, timm.list_models())
        raise UserError(f"unknown timm model {model!r}{hint} (timm.list_models() lists them)")
    return model


def vit_patch_size(setting: int | str, crop_size: int) -> int:
    """`auto`: 4 px at 32 px, 8 at 64, 12 at 96, 16 from 128 px (crop / 8 within [4, 16]): 64 tokens for
    small images, as CIFAR ViTs use, and the standard 16-px patches at ImageNet sizes."""
    if setting == "auto":
        return min(16, max(4, crop_size // 8))
    return int(setting)


def architecture(backbone: Mapping[str, Any], crop_size: int) -> tuple[str, dict[str, Any]]:
    """(name, the options that fix the backbone's weights' shapes) of a `backbone` config section at a crop
    size: what export metadata records and what a weights file must match."""
    name = backbone["name"]
    if name in TIMM_VITS:
        patch = vit_patch_size(backbone["patch_size"], crop_size)
        return name, {"image_size": crop_size, "patch_size": patch, "pool": backbone["pool"]}
    if name in BACKBONES.names():
        return name, {"cifar_stem": use_cifar_stem(backbone["cifar_stem"], crop_size)}
    return name, {}  # timm:<model> and a user's factory


def training_options(backbone: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a `backbone` section that change training but not the weights' shapes."""
    keys = ("zero_init_residual", "drop_path_rate")
    return {k: backbone[k] for k in keys if k in backbone}


def use_cifar_stem(setting: bool | str, crop_size: int) -> bool:
    """`auto` picks the CIFAR stem for small images (<= 64 px), where the ImageNet stem loses too much."""
    if setting == "auto":
        return crop_size <= 64
    return bool(setting)


def build_backbone(name: str, **options: Any) -> tuple[nn.Module, int]:
    """Build a registered backbone with its options (ResNets: cifar_stem, zero_init_residual; ViTs: image_size,
    patch_size, pool, drop_path_rate), any timm model as `timm:<name>` (drop_path_rate), or a user's from
    `package.module:factory` (no options; it returns the module, or (module, D)). Returns the module (images
    -> [B, D] features) and D."""
    if is_factory_path(name):
        return user_backbone(name)
    if is_timm_name(name):
        return timm_backbone(name, **options)
    return BACKBONES.get(name)(**options)


def is_factory_path(name: str) -> bool:
    """Whether a backbone name is a `package.module:factory` path rather than a registered name (a value of
    another type, backbone.name=0, is neither: its rule refuses it in one line)."""
    if not isinstance(name, str) or is_timm_name(name):
        return False
    module, _, attribute = name.partition(":")
    return bool(module) and bool(attribute) and all(part.isidentifier() for part in (*module.split("."), attribute))


def check_stored_backbone(stored: str, where: str, named_by_command: bool) -> None:
    """A backbone name read from a file (`where`: a run's config, a checkpoint) is looked up, never imported:
    a `package.module:factory` path there is refused before anything is imported unless the command names the
    backbone itself (which then replaces it), since importing and calling what a file names would let the
    file run code."""
    if is_factory_path(stored) and not named_by_command:
        raise UserError(
            f"{where} names the backbone {stored}, a package.module:factory path; selfsup imports only code a command "
            f"names: add backbone.name={stored} to this command if you trust that code"
        )


def backbone_settings(name: str) -> Declaration:
    """The `backbone.*` settings of backbone `name`: the name and optional starting weights, then a ResNet's
    stem and initialisation, a ViT's patches, pooling and drop path, a timm model's drop path."""
    names = BACKBONES.names()
    common = {
        "name": Rule(
            lambda v: v in names or (isinstance(v, str) and (is_factory_path(v) or is_timm_name(v))),
            f"one of {', '.join(names)}, timm:<model name> or a factory path package.module:function",
            tuple(names),
        ),
        "weights": optional(TEXT),
    }
    if name in TIMM_VITS:
        patch = Rule(lambda v: v == "auto" or POSITIVE_INT.ok(v), "auto or a positive integer")
        return {**common, "patch_size": patch, "pool": one_of(*VIT_POOLS), "drop_path_rate": BELOW_ONE}
    if is_timm_name(name):
        return {**common, "drop_path_rate": BELOW_ONE}
    if is_factory_path(name):
        return common
    return {**common, "cifar_stem": AUTO_TRUE_FALSE, "zero_init_residual": BOOL}


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
