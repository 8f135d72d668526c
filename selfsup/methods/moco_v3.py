"""MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers"):
queries from a backbone + projector + predictor, keys from its momentum copy (no predictor), a symmetric
contrastive loss over the keys of the whole global batch (no queue), and the momentum raised to 1 over the
run by a cosine schedule."""

from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.dist import gather_no_grad, world_info
from selfsup.errors import UserError
from selfsup.losses import moco_v3_contrastive
from selfsup.methods.base import METHODS, Method, Schedule, spread
from selfsup.methods.momentum import frozen_copy
from selfsup.nets.heads import mlp
from selfsup.settings import Flag, Momentum, Positive, PositiveInt, Probability


@METHODS.register("moco_v3")
class MoCoV3(Method):
    """Defaults: the paper's ViT settings (projector 3 layers 4096 -> 256 ending in BN, predictor 2 layers
    4096, T 0.2, momentum 0.99 -> 1 by a cosine). Its ResNet-50 setting is proj_layers=2, temperature=1.0.
    `freeze_patch_embed` keeps a ViT's random patch projection fixed (section 4.2: it stabilises training)."""

    num_views = 2

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 4096,
        proj_output_dim: PositiveInt = 256,
        proj_layers: PositiveInt = 3,
        pred_hidden_dim: PositiveInt = 4096,
        temperature: Positive = 0.2,
        momentum: Momentum = 0.99,
        final_momentum: Probability = 1.0,
        freeze_patch_embed: Flag = False,
    ) -> None:
        super().__init__(backbone, feature_dim)
        if freeze_patch_embed:  # the paper's fix for ViT instability: a fixed random patch projection
            patch_embed = getattr(backbone, "patch_embed", None)
            if patch_embed is None:
                raise UserError("method.freeze_patch_embed needs a ViT backbone (backbone=vit_tiny, ...)")
            patch_embed.requires_grad_(False)
        # Every layer ends in BN (the projector's last without affine; the predictor's last in none): the
        # official code's _build_mlp.
        self.projector = mlp(self.feature_dim, proj_hidden_dim, proj_output_dim, proj_layers, last_bn=True)
        self.predictor = mlp(proj_output_dim, pred_hidden_dim, proj_output_dim, num_layers=2)
        self.momentum_backbone = frozen_copy(backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.temperature = float(temperature)
        self.base_momentum = float(momentum)
        self.final_momentum = float(final_momentum)

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        self.check_views(views)
        x = torch.cat(views)
        q1, q2 = self.predictor(self.projector(self.backbone(x))).chunk(2)
        with torch.no_grad():
            k1, k2 = self.momentum_projector(self.momentum_backbone(x)).chunk(2)
            k1, k2 = gather_no_grad(k1), gather_no_grad(k2)
        rank, _ = world_info()
        offset = rank * q1.shape[0]
        loss = moco_v3_contrastive(q1, k2, self.temperature, offset) + moco_v3_contrastive(
            q2, k1, self.temperature, offset
        )
        return {"loss": loss, "spread": spread(q1)}

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.momentum_backbone), (self.projector, self.momentum_projector)]
