"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of negative keys."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from selfsup.dist import gather_no_grad, world_info
from selfsup.losses import info_nce
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.methods.momentum import frozen_copy
from selfsup.nets.heads import mlp
from selfsup.settings import Flag, Momentum, Positive, PositiveInt, int_in

# 16 x the paper's 65536 keys: the queue holds queue_size x proj_output_dim floats (512 MiB at 2^20 x 128),
# and an unbounded queue_size asked the allocator for a TiB before the first step.
QueueSize = Annotated[int, int_in(1, 2**20)]


@METHODS.register("moco")
class MoCo(Method):
    """Defaults: MoCo v2's (projector 2048 -> 128, queue 65536, temperature 0.2, momentum 0.999)."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 2048,
        proj_output_dim: PositiveInt = 128,
        proj_layers: PositiveInt = 2,
        queue_size: QueueSize = 65536,
        temperature: Positive = 0.2,
        momentum: Momentum = 0.999,
        symmetric: Flag = False,
    ) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers)
        self.key_backbone = frozen_copy(backbone)
        self.key_projector = frozen_copy(self.projector)
        self.base_momentum = float(momentum)
        self.final_momentum = None  # MoCo v2's momentum is constant
        self.temperature = float(temperature)
        self.symmetric = bool(symmetric)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_output_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key embeddings with shuffled BatchNorm (MoCo section 3.3): under data parallelism the key batch
        is permuted across processes so that a query and its key never share BatchNorm statistics. With
        one process there is nothing to shuffle across and the key batch is encoded as it is."""
        rank, world = world_info()
        if world == 1:
            return F.normalize(self.key_projector(self.key_backbone(x)), dim=1)
        images = gather_no_grad(x)
        perm = torch.randperm(images.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        n = x.shape[0]
        local = perm[rank * n : (rank + 1) * n]
        shuffled_keys = gather_no_grad(F.normalize(self.key_projector(self.key_backbone(images[local])), dim=1))
        keys = torch.empty_like(shuffled_keys)
        keys[perm] = shuffled_keys
        return keys[rank * n : (rank + 1) * n]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest entries of the queue with the keys of every process (a ring buffer); in training
        mode only, so that an eval-mode forward (a validation loss) leaves the queue as it was."""
        if not self.training:
            return
        size = self.queue.shape[0]
        keys = gather_no_grad(keys).to(self.queue.dtype)[-size:]
        index = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[index] = keys
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        # The loss reads a copy of the queue: enqueueing this step's keys must not alter its graph.
        queue = self.queue.clone()
        if self.symmetric:
            q1, q2 = self.projector(self.backbone(torch.cat(views))).chunk(2)
            k1, k2 = self.keys(views[0]), self.keys(views[1])
            loss = 0.5 * (info_nce(q1, k2, queue, self.temperature) + info_nce(q2, k1, queue, self.temperature))
            # One view's keys of every process, then the other's: the queue order of one process with the
            # global batch (enqueueing [k1, k2] per process would interleave the processes' views).
            self.enqueue(k1)
            self.enqueue(k2)
        else:
            q1 = self.projector(self.backbone(views[0]))
            k2 = self.keys(views[1])
            loss = info_nce(q1, k2, queue, self.temperature)
            self.enqueue(k2)
        return {"loss": loss, "spread": spread(q1)}

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]
