"""Cross-process helpers that keep gradients (negatives gathered across processes)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every process along dim 0; gradients flow back to each process's part.

    torch.distributed.nn.all_gather's backward sums the gradients that all processes' losses send to
    each part, so averaging the per-process gradients (DDP) gives the gradient of the global loss."""
    rank, world = world_info()
    if world == 1:
        return x
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x), dim=0)
