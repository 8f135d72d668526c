"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on expander outputs of two views."""

from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.dist import gather_with_grad
from selfsup.losses import vicreg_terms
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.nets.heads import mlp
from selfsup.settings import NonNegative, PositiveInt


@METHODS.register("vicreg")
class VICReg(Method):
    """Defaults: the paper's (expander 8192 x 3, loss weights 25 / 25 / 1)."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 8192,
        proj_output_dim: PositiveInt = 8192,
        proj_layers: PositiveInt = 3,
        sim_weight: NonNegative = 25.0,
        var_weight: NonNegative = 25.0,
        cov_weight: NonNegative = 1.0,
    ) -> None:
        super().__init__(backbone, feature_dim)
        self.expander = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers)
        self.weights = (float(sim_weight), float(var_weight), float(cov_weight))

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        z1, z2 = self.expander(self.backbone(torch.cat(views))).chunk(2)
        # Variance and covariance are statistics of the global batch, as in the official code.
        terms = vicreg_terms(gather_with_grad(z1), gather_with_grad(z2))
        sim, var, cov = self.weights
        loss = sim * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]
        return {"loss": loss, "spread": spread(z1), **{k: v.detach() for k, v in terms.items()}}
