"""The Method base: a backbone plus heads plus a loss; `forward(views)` is one training step's loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from selfsup.registry import Registry


class Method(nn.Module):
    """A self-supervised method: composes a backbone, its heads and a loss function.

    `forward(views)` takes the list of augmented views (each [B, 3, S, S]; multi-crop: the global views,
    then the local crops) and returns a dict with the scalar `loss` and detached tensors to log. Methods
    with momentum encoders, queues or centers update them in `after_optimizer_step`, which the loop calls
    once per optimizer step. Before each step the loop sets `current_step`; `set_schedule` tells the
    method the length of an epoch and of the run, so options given in epochs become steps.
    """

    multi_crop = False  # whether forward takes local crops after the global views (SwAV, DINO)
    # Whether the loss compares an output with the input pixels (the beta-VAE): the views come
    # standardised, so `build_method` (methods/build.py) passes their mean and std as `pixel_stats` to undo that.
    reconstructs_pixels = False

    def __init__(self, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.current_step = 0
        self.steps_per_epoch = 1
        self.total_steps = 1

    def set_schedule(self, steps_per_epoch: int, total_steps: int) -> None:
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps

    def epochs_to_steps(self, epochs: float) -> int:
        return round(epochs * self.steps_per_epoch)

    def representation(self) -> nn.Module:
        """The module whose output evaluation measures: the backbone (the beta-VAE: its posterior mean)."""
        return self.backbone

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        """Momentum / EMA updates; nothing for methods without them."""

    def param_group_options(self) -> list[tuple[nn.Module, dict[str, Any]]]:
        """Modules trained with optimizer options of their own (see `param_groups`): a predictor's own lr,
        weight decay, or lr fixed at the peak (SimSiam)."""
        return []


METHODS: Registry[Callable[[DictConfig, nn.Module, int], Method]] = Registry("method")


def resolution_runs(views: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive crops of one resolution: multi-crop's global views, then
    its local crops."""
    runs: list[tuple[int, int]] = []
    for i, view in enumerate(views):
        if runs and view.shape[-2:] == views[runs[-1][0]].shape[-2:]:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def encode_crops(encode: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor]) -> list[torch.Tensor]:
    """`encode` applied to every crop, one batched call per run of one resolution, as DINO's
    MultiCropWrapper does."""
    outputs: list[torch.Tensor] = []
    for start, end in resolution_runs(views):
        outputs.extend(encode(torch.cat(views[start:end])).chunk(end - start))
    return outputs


def global_views(views: list[torch.Tensor]) -> int:
    """How many crops are global: the first run of one resolution (global views come first)."""
    return resolution_runs(views)[0][1]
