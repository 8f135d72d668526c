"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp codes over learnable prototypes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import DictConfig

from selfsup.dist import sum_over_processes, without_gradient
from selfsup.losses import sinkhorn, swav_multicrop
from selfsup.methods.base import METHODS, Method, encode_crops, global_views
from selfsup.nets.heads import mlp


@METHODS.register("swav")
class SwAV(Method):
    """Codes are computed on the global views (`crops_for_assign` of the official code), predicted from
    every other crop, local crops included. Prototypes are kept L2-normalised and get no gradient for
    the first `freeze_prototypes_epochs` epochs. With `queue_length` > 0 each process keeps its latest
    embeddings of each global view and, once the queue is full, adds them to the Sinkhorn batch
    (the official code's remedy for small batches)."""

    multi_crop = True

    def __init__(self, cfg: DictConfig, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, num_layers=2)
        self.prototypes = nn.Linear(cfg.proj_output_dim, cfg.num_prototypes, bias=False)
        self.normalize_prototypes()
        self.temperature = float(cfg.temperature)
        self.eps = float(cfg.sinkhorn_eps)
        self.iters = int(cfg.sinkhorn_iters)
        self.freeze_prototypes_epochs = float(cfg.freeze_prototypes_epochs)
        self.register_buffer("queue", torch.zeros(2, int(cfg.queue_length), cfg.proj_output_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(views) < 2:
            raise ValueError(f"SwAV needs at least 2 crops, got {len(views)}")
        n_global = global_views(views)
        if n_global > self.queue.shape[0] and self.queue.shape[1]:
            raise ValueError(f"the SwAV queue holds 2 global views, got {n_global}")
        z = [F.normalize(e, dim=1) for e in encode_crops(lambda x: self.projector(self.backbone(x)), views)]
        weight = self.prototypes.weight
        if self.current_step < self.epochs_to_steps(self.freeze_prototypes_epochs):
            weight = without_gradient(weight)
        scores = [e @ weight.T for e in z]
        codes = [self.assign(scores[i], z[i].detach(), i) for i in range(n_global)]
        loss = swav_multicrop(scores, codes, self.temperature)
        return {"loss": loss, "z_std": z[0].detach().float().std(dim=0).mean()}

    @torch.no_grad()
    def assign(self, scores: torch.Tensor, z: torch.Tensor, view: int) -> torch.Tensor:
        """Sinkhorn codes of this batch's crop `view`, with the queued embeddings when the queue is full."""
        length = self.queue.shape[1]
        queue = self.queue[view]
        batch = scores
        if length and self.queue_filled >= length:
            batch = torch.cat([scores, queue.to(scores.dtype) @ self.prototypes.weight.detach().T])
        codes = sinkhorn(batch, self.eps, self.iters, sum_over_processes)[: scores.shape[0]]
        if length == 0:
            return codes
        n = min(z.shape[0], length)
        queue.copy_(torch.cat([z[:n].to(queue.dtype), queue[: length - n]]))  # newest first
        if view == 0:
            self.queue_filled.add_(n)
        return codes

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.normalize_prototypes()
