"""Model assembly: the backbone a config describes, wrapped by the method it names. Training rebuilds a
run's network with it, and evaluation rebuilds a checkpoint's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

import selfsup.methods  # noqa: F401  (registers every method)
from selfsup.data.views import split_mean_std
from selfsup.errors import UserError
from selfsup.methods.base import METHODS, Method
from selfsup.nets.weights import build_backbone_from_config


def build_method(cfg: DictConfig, backbone: nn.Module, feature_dim: int) -> Method:
    """Construct the method named by `cfg.method.name` around an already built backbone."""
    method = check_views(cfg)
    options = method_options(cfg.method)
    if method.reconstructs_pixels:
        options["pixel_stats"] = split_mean_std(cfg.data, cfg.views)
    return method(backbone, feature_dim, **options)


def check_views(cfg: DictConfig) -> type[Method]:
    """Refuse views the method named by `cfg` cannot take (local crops, a number of views), in one line, when
    the config is validated and again when a method is built from it; returns the method's class."""
    method = METHODS.get(cfg.method.name)
    if cfg.views.get("local_crops", 0) and not method.multi_crop:
        takers = ", ".join(name for name in METHODS.names() if METHODS.get(name).multi_crop)
        raise UserError(
            f"method={cfg.method.name} takes global views only; views.local_crops (multi-crop) is for {takers}: "
            "set views.local_crops=0"
        )
    problem = method.views_problem(cfg.views.num)
    if problem:
        raise UserError(f"method={cfg.method.name}: {problem}")
    return method


def method_options(section: DictConfig) -> dict[str, Any]:
    """A config's `method.*` as the keyword arguments of the method's constructor (all but `name`)."""
    options = OmegaConf.to_container(section, resolve=True)
    assert isinstance(options, dict)
    options.pop("name", None)
    return options


def build_model(cfg: DictConfig, init_weights: bool = False) -> Method:
    """Backbone + method from a config. `init_weights` starts the backbone from backbone.weights (a new
    run), before the method copies it into momentum networks."""
    backbone, feature_dim = build_backbone_from_config(cfg, init_weights)
    return build_method(cfg, backbone, feature_dim)


def check_buildable(cfg: DictConfig) -> None:
    """Build the model on the meta device (no memory, no weights read): the refusals only building makes
    (MAE on a ResNet, a crop that is not a multiple of the ViT's patch) reach `selfsup config`, submit and
    study as they reach pretrain, before anything is written or queued."""
    with torch.device("meta"):
        build_model(cfg)
