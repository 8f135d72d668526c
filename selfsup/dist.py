"""Cross-process helpers: gathers with and without gradient (negatives, keys), sums over processes."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums, over processes, the gradient each one sends to this part.

    Written with all_reduce (not reduce_scatter) so that it also runs on gloo, i.e. on CPUs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = world_info()
        ctx.rank, ctx.size = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every process along dim 0 (equal sizes); gradients flow back to each part.

    Every process's loss sends gradient to every part, and each part receives their sum, so averaging
    the per-process gradients (DDP) gives the gradient of the mean of the per-process losses."""
    _, world = world_info()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every process along dim 0 (equal sizes), without gradient: for tensors that carry
    none (MoCo's keys and key images, MoCo v3's keys). `x` itself with one process."""
    _, world = world_info()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _AllReduceWithGrad(torch.autograd.Function):
    """Sum over processes whose backward sums, over processes, the gradient sent to the total."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        total = x.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over processes, differentiably: each process's part receives the sum of every process's
    gradient of the total (statistics of the global batch inside the network, e.g. synchronised BatchNorm)."""
    return x if world_info()[1] == 1 else _AllReduceWithGrad.apply(x)


def sum_over_processes(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over processes, in place (unchanged with one process); returns `t`. For statistics of the
    global batch: Sinkhorn's normalisers, DINO's center, DirectPred's correlation."""
    if world_info()[1] > 1:
        dist.all_reduce(t)
    return t
