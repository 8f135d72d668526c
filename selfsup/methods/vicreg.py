"""VICReg (Bardes et al. 2022): invariance, variance and covariance terms on expander outputs of two views."""

from __future__ import annotations

import torch
import torch.nn as nn
from omegaconf import DictConfig

from selfsup.dist import gather_with_grad
from selfsup.losses import vicreg_terms
from selfsup.methods.base import METHODS, Method
from selfsup.nets.heads import mlp


@METHODS.register("vicreg")
class VICReg(Method):
    def __init__(self, cfg: DictConfig, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, feature_dim)
        self.expander = mlp(feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, num_layers=cfg.proj_layers)
        self.weights = (float(cfg.sim_weight), float(cfg.var_weight), float(cfg.cov_weight))

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(views) != 2:
            raise ValueError(f"VICReg uses 2 views, got {len(views)} (set views.num=2)")
        z1, z2 = self.expander(self.backbone(torch.cat(views))).chunk(2)
        # Variance and covariance are statistics of the global batch, as in the official code.
        terms = vicreg_terms(gather_with_grad(z1), gather_with_grad(z2))
        sim, var, cov = self.weights
        loss = sim * terms["invariance"] + var * terms["variance"] + cov * terms["covariance"]
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
