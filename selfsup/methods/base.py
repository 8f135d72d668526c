"""The Method base: a backbone plus heads plus a loss; `forward(views)` is one training step's loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
from omegaconf import DictConfig

from selfsup.registry import Registry


class Method(nn.Module):
    """A self-supervised method: composes a backbone, its heads and a loss function.

    `forward(views)` takes the list of augmented views (each [B, 3, S, S]) and returns a dict with the
    scalar `loss` and detached tensors to log. Methods with momentum encoders, queues or centers update
    them in `after_optimizer_step`, which the loop calls once per optimizer step.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Momentum / EMA updates; nothing for methods without them."""

    def fixed_lr_modules(self) -> list[nn.Module]:
        """Modules trained at the peak lr throughout instead of the schedule (SimSiam's predictor)."""
        return []


METHODS: Registry[Callable[[DictConfig, nn.Module, int], Method]] = Registry("method")


def build_method(cfg: DictConfig, backbone: nn.Module, feature_dim: int) -> Method:
    """Construct the method named by `cfg.method.name` around an already built backbone."""
    # Importing the package registers every method module.
    import selfsup.methods  # noqa: F401

    return METHODS.get(cfg.method.name)(cfg.method, backbone, feature_dim)
