"""BYOL (Grill et al. 2020): an online network predicts an EMA target network's projection of another view."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from selfsup.losses import negative_cosine
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.methods.momentum import frozen_copy
from selfsup.nets.heads import mlp
from selfsup.nets.predictors import PredictorSettings, build_predictor
from selfsup.settings import Momentum, PositiveInt, Probability


@METHODS.register("byol")
class BYOL(Method):
    """Defaults: the paper's (projector 4096 -> 256, MLP predictor 4096, EMA 0.996 -> 1). `predictor` takes
    the fields of `PredictorSettings` (e.g. `{"type": "directpred"}`: DirectPred)."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 4096,
        proj_output_dim: PositiveInt = 256,
        proj_layers: PositiveInt = 2,
        momentum: Momentum = 0.996,
        final_momentum: Probability = 1.0,
        predictor: PredictorSettings | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(backbone, feature_dim)
        settings = PredictorSettings.of(predictor)
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers)
        self.predictor = build_predictor(settings, proj_output_dim)
        self.predictor_options = settings.optimizer_options()  # its own lr scale / weight decay, if set
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.base_momentum = float(momentum)
        self.final_momentum = float(final_momentum)

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        x = torch.cat(views)
        p1, p2 = self.predictor(self.projector(self.backbone(x))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_backbone(x)).chunk(2)
        # The paper's symmetrised loss: (2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1)), eq. 2 and 3.
        loss = 4 + 2 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        regularization = self.predictor.regularization()
        if regularization is not None:
            loss = loss + regularization
        return {"loss": loss, "spread": spread(z1)}

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.target_backbone), (self.projector, self.target_projector)]

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        super().after_optimizer_step(step, total_steps)
        self.predictor.after_optimizer_step(step)

    def param_group_options(self) -> list[tuple[nn.Module, dict[str, Any]]]:
        return [(self.predictor, self.predictor_options)] if self.predictor_options else []


# DirectPred and DirectCopy are BYOL with an analytic predictor (method.predictor.type); their own names
# keep their runs apart from BYOL's (output directories, reports).
METHODS.register("directpred")(BYOL)
METHODS.register("directcopy")(BYOL)
