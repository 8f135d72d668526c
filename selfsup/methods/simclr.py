"""SimCLR (Chen et al. 2020): two views, a 2-layer projector, NT-Xent with negatives from all processes."""

from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.dist import gather_with_grad, world_info
from selfsup.losses import nt_xent
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.nets.heads import mlp
from selfsup.settings import Positive, PositiveInt


@METHODS.register("simclr")
class SimCLR(Method):
    """Defaults: the paper's ImageNet setting (temperature 0.1, projector 2048 -> 128)."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        temperature: Positive = 0.1,
        proj_hidden_dim: PositiveInt = 2048,
        proj_output_dim: PositiveInt = 128,
        proj_layers: PositiveInt = 2,
    ) -> None:
        super().__init__(backbone, feature_dim)
        self.temperature = float(temperature)
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers)

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        # One pass over both views: BatchNorm sees the whole 2n batch, as in the paper's implementation.
        z1, z2 = self.projector(self.backbone(torch.cat(views))).chunk(2)
        rank, _ = world_info()
        loss = nt_xent(z1, z2, self.temperature, gather_with_grad(z1), gather_with_grad(z2), offset=rank * z1.shape[0])
        return {"loss": loss, "spread": spread(z1)}
