"""Barlow Twins (Zbontar et al. 2021): the cross-correlation of two views' embeddings driven to identity."""

from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.dist import gather_with_grad
from selfsup.losses import barlow_twins
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.nets.heads import mlp
from selfsup.settings import NonNegative, PositiveInt


@METHODS.register("barlow")
class BarlowTwins(Method):
    """Defaults: the paper's (projector 8192 x 3, lambda 0.005)."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 8192,
        proj_output_dim: PositiveInt = 8192,
        proj_layers: PositiveInt = 3,
        lambd: NonNegative = 0.005,
    ) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers)
        self.lambd = float(lambd)

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        z1, z2 = self.projector(self.backbone(torch.cat(views))).chunk(2)
        # The cross-correlation is over the global batch (the official code all-reduces it).
        loss = barlow_twins(gather_with_grad(z1), gather_with_grad(z2), self.lambd)
        return {"loss": loss, "spread": spread(z1)}
