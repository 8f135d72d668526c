"""SimSiam (Chen & He 2021): BYOL without the momentum target; the stop-gradient alone avoids collapse."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from selfsup.losses import negative_cosine
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.nets.heads import mlp
from selfsup.nets.predictors import PredictorSettings, build_predictor
from selfsup.settings import Flag, PositiveInt


@METHODS.register("simsiam")
class SimSiam(Method):
    """Defaults: the paper's (projector 2048 x 3 with BN on the output, predictor bottleneck 512, predictor lr
    not decayed). `predictor` takes the fields of `PredictorSettings`."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 2048,
        proj_output_dim: PositiveInt = 2048,
        proj_layers: PositiveInt = 3,
        fixed_predictor_lr: Flag = True,
        predictor: PredictorSettings | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(backbone, feature_dim)
        settings = PredictorSettings.of(predictor, hidden_dim=512)
        # Projector: 3 layers with BN on the output (paper section 4.1); predictor: a 2-layer bottleneck.
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, num_layers=proj_layers, last_bn=True)
        self.predictor = build_predictor(settings, proj_output_dim)
        self.fixed_predictor_lr = bool(fixed_predictor_lr)
        self.predictor_options = settings.optimizer_options()  # its own lr scale / weight decay, if set

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        z1, z2 = self.projector(self.backbone(torch.cat(views))).chunk(2)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        # negative_cosine detaches its target: the stop-gradient of eq. 3.
        loss = 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))
        regularization = self.predictor.regularization()
        if regularization is not None:
            loss = loss + regularization
        return {"loss": loss, "spread": spread(z1)}

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        self.predictor.after_optimizer_step(step)

    def param_group_options(self) -> list[tuple[nn.Module, dict[str, Any]]]:
        # Paper section 4.1: "the learning rate of the predictor is not decayed" (it helps, table 1 note).
        options = {**self.predictor_options, **({"fixed_lr": True} if self.fixed_predictor_lr else {})}
        return [(self.predictor, options)] if options else []
