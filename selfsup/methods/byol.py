"""BYOL (Grill et al. 2020): an online network predicts an EMA target network's projection of another view."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig

from selfsup.losses import negative_cosine
from selfsup.methods.base import METHODS, Method
from selfsup.methods.momentum import cosine_momentum, ema_update, frozen_copy
from selfsup.nets.heads import mlp
from selfsup.nets.predictors import build_predictor, predictor_options


@METHODS.register("byol")
class BYOL(Method):
    def __init__(self, cfg: DictConfig, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, feature_dim)
        self.projector = mlp(feature_dim, cfg.proj_hidden_dim, cfg.proj_output_dim, num_layers=2)
        self.predictor = build_predictor(cfg.predictor, cfg.proj_output_dim)
        self.predictor_options = predictor_options(cfg.predictor)  # its own lr scale / weight decay, if set
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = float(cfg.momentum)
        self.final_momentum = float(cfg.final_momentum)

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(views) != 2:
            raise ValueError(f"BYOL uses 2 views, got {len(views)} (set views.num=2)")
        x = torch.cat(views)
        p1, p2 = self.predictor(self.projector(self.backbone(x))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)
        # The paper's symmetrised loss: (2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1)), eq. 2 and 3.
        loss = 4 + 2 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        regularization = self.predictor.regularization()
        if regularization is not None:
            loss = loss + regularization
        return {"loss": loss, "z_std": torch.nn.functional.normalize(z1.float(), dim=1).std(dim=0).mean()}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        tau = cosine_momentum(step, total_steps, self.base_momentum, self.final_momentum)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)
        self.predictor.after_optimizer_step(step)

    def param_group_options(self) -> list[tuple[nn.Module, dict[str, Any]]]:
        return [(self.predictor, self.predictor_options)] if self.predictor_options else []


# DirectPred and DirectCopy are BYOL with an analytic predictor (method.predictor.type); their own names
# keep their runs apart from BYOL's (output directories, reports).
METHODS.register("directpred")(BYOL)
METHODS.register("directcopy")(BYOL)
