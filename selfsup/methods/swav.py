"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp codes over learnable prototypes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from selfsup.dist import sum_over_processes
from selfsup.losses import sinkhorn, swav_multicrop
from selfsup.methods.base import METHODS, Method, Schedule, assignment_entropies, encode_crops, global_views, spread
from selfsup.nets.heads import mlp
from selfsup.settings import Count, NonNegative, Positive, PositiveInt


@METHODS.register("swav")
class SwAV(Method):
    """Codes are computed on the global views (`crops_for_assign` of the official code), predicted from
    every other crop, local crops included. Prototypes are kept L2-normalised and get no gradient for
    the first `freeze_prototypes_epochs` epochs (`frozen_parameters`). With `queue_size` > 0 each
    process keeps its latest embeddings of each global view and, once the queue is full, adds them to the
    Sinkhorn batch (the official code's remedy for small batches). Defaults: the paper's (projector
    2048 -> 128, 3000 prototypes, temperature 0.1, Sinkhorn eps 0.05 x 3 iterations, prototypes frozen for
    1 epoch)."""

    multi_crop = True

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 2048,
        proj_output_dim: PositiveInt = 128,
        proj_layers: PositiveInt = 2,
        num_prototypes: PositiveInt = 3000,
        temperature: Positive = 0.1,
        sinkhorn_eps: Positive = 0.05,
        sinkhorn_iters: PositiveInt = 3,
        freeze_prototypes_epochs: NonNegative = 1.0,
        queue_size: Count = 0,
    ) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers)
        self.prototypes = nn.Linear(proj_output_dim, num_prototypes, bias=False)
        self.normalize_prototypes()
        self.temperature = float(temperature)
        self.eps = float(sinkhorn_eps)
        self.iters = int(sinkhorn_iters)
        self.freeze_prototypes_epochs = float(freeze_prototypes_epochs)
        self.register_buffer("queue", torch.zeros(2, int(queue_size), proj_output_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        if len(views) < 2:
            raise ValueError(f"SwAV needs at least 2 crops, got {len(views)}")
        n_global = global_views(views)
        if n_global > self.queue.shape[0] and self.queue.shape[1]:
            raise ValueError(f"the SwAV queue holds 2 global views, got {n_global}")
        z = [F.normalize(e, dim=1) for e in encode_crops(lambda x: self.projector(self.backbone(x)), views)]
        scores = [e @ self.prototypes.weight.T for e in z]
        codes = [self.assign(scores[i], z[i].detach(), i) for i in range(n_global)]
        if self.queue.shape[1] and self.training:  # counted once every view has read its queue: all fill together
            self.queue_filled.add_(min(z[0].shape[0], self.queue.shape[1]))
        loss = swav_multicrop(scores, codes, self.temperature)
        return {"loss": loss, "spread": spread(z[0]), **assignment_entropies(torch.cat(codes), "code")}

    @torch.no_grad()
    def assign(self, scores: torch.Tensor, z: torch.Tensor, view: int) -> torch.Tensor:
        """Sinkhorn codes of this batch's crop `view`, with the queued embeddings when the queue is full; the
        crop's embeddings join the queue in training mode only (an eval-mode forward leaves it as it was)."""
        length = self.queue.shape[1]
        queue = self.queue[view]
        batch = scores
        if length and self.queue_filled >= length:
            batch = torch.cat([scores, queue.to(scores.dtype) @ self.prototypes.weight.detach().T])
        codes = sinkhorn(batch, self.eps, self.iters, sum_over_processes)[: scores.shape[0]]
        if length == 0 or not self.training:
            return codes
        n = min(z.shape[0], length)
        queue.copy_(torch.cat([z[:n].to(queue.dtype), queue[: length - n]]))  # newest first
        return codes

    def frozen_parameters(self, schedule: Schedule | None) -> list[nn.Parameter]:
        if self.freeze_prototypes_epochs == 0:
            return []
        at = self.scheduled(schedule, f"freeze_prototypes_epochs={self.freeze_prototypes_epochs:g}")
        return [self.prototypes.weight] if at.step < at.steps(self.freeze_prototypes_epochs) else []

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.normalize_prototypes()
