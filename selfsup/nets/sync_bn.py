"""Batch normalisation over the global batch of all processes (`trainer.sync_batchnorm`).

Methods whose loss couples the samples of a batch (SimCLR, BYOL, SwAV...) are specified with statistics
over the whole batch; with per-process BatchNorm a run on N processes trains another network than one
process on the same global batch. On CUDA this is torch.nn.SyncBatchNorm; torch's refuses CPU tensors, so
on CPU (gloo) `GlobalBatchNorm` computes the same statistics with a differentiable all_reduce.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from selfsup.dist import all_reduce_with_grad, world_info


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm1d/2d whose training statistics are the mean and variance over every process's batch.

    Same parameters, buffers and state-dict keys as nn.BatchNorm*, so checkpoints load into either."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input [N, C, ...], got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_info()[1] == 1:
            return super().forward(x)
        self._check_input_dim(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([x.numel() / channels], device=x.device)
        # Sums, sums of squares and counts of all processes; the backward sums every process's gradient.
        total = all_reduce_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm of `module` computed over the global batch: torch's SyncBatchNorm on CUDA,
    GlobalBatchNorm elsewhere. Parameters and running statistics are kept."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert(module)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        converted.to(next(iter(module.state_dict().values())).device)
        for name, param in module.named_parameters(recurse=False):
            getattr(converted, name).requires_grad_(param.requires_grad)
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module
