"""Activation checkpointing (`trainer.activation_checkpointing`): keep only each residual block's input and
recompute the block in backward, trading about one extra forward for most of the activation memory, so
large-batch methods fit.

The blocks' BatchNorm layers see the same batch twice; their running statistics are updated in the forward
only, so a checkpointed network trains exactly as the plain one (same weights and buffers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers of `module` normalise as usual but leave their running statistics untouched."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


class CheckpointedSequential(nn.Sequential):
    """nn.Sequential whose blocks store only their input while training and recompute the rest in backward.
    Same children, so the same state-dict keys as the nn.Sequential it replaces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            if self.training and torch.is_grad_enabled():
                x = checkpoint(
                    block,
                    x,
                    use_reentrant=False,
                    context_fn=lambda block=block: (contextlib.nullcontext(), running_stats_frozen(block)),
                )
            else:
                x = block(x)
        return x


def enable_activation_checkpointing(backbone: nn.Module) -> int:
    """Checkpoint every block of the backbone's stages (its nn.Sequential children: ResNet's layer1-4);
    returns how many blocks recompute. Changes the stages' class in place, nothing else."""
    blocks = 0
    for child in backbone.children():
        if type(child) is nn.Sequential:
            child.__class__ = CheckpointedSequential
            blocks += len(child)
    return blocks


def disable_activation_checkpointing(module: nn.Module) -> None:
    """Back to plain stages (to count the model's FLOPs without the recomputation)."""
    for m in module.modules():
        if isinstance(m, CheckpointedSequential):
            m.__class__ = nn.Sequential
