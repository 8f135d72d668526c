"""DINO (Caron et al. 2021): self-distillation from an EMA teacher with centering and sharpening."""

from __future__ import annotations

import torch
import torch.nn as nn

from selfsup.dist import sum_over_processes, world_info
from selfsup.losses import dino
from selfsup.methods.base import (
    METHODS,
    Method,
    Schedule,
    assignment_entropies,
    encode_crops,
    global_views,
    spread,
)
from selfsup.methods.momentum import frozen_copy
from selfsup.nets.heads import DINOHead
from selfsup.settings import Flag, Momentum, NonNegative, Positive, PositiveInt


@METHODS.register("dino")
class DINO(Method):
    """The student sees every crop, the teacher the global views only (Algorithm 1). The teacher's
    outputs are centred by a running mean over the global batch (momentum `center_momentum`) and
    sharpened by a temperature warmed up linearly from `warmup_teacher_temperature` to `teacher_temperature`
    over `warmup_teacher_temperature_epochs`; the teacher follows the student by EMA on BYOL's cosine schedule.
    The last layer gets no gradient during the first `freeze_last_layer_epochs` (`frozen_parameters`).
    Defaults: the paper's ResNet-50 setting (head 2048 -> 256 -> 65536 without BN, student 0.1, teacher 0.04,
    momentum 0.996)."""

    multi_crop = True

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        proj_hidden_dim: PositiveInt = 2048,
        bottleneck_dim: PositiveInt = 256,
        out_dim: PositiveInt = 65536,
        use_bn_in_head: Flag = False,
        norm_last_layer: Flag = True,
        student_temperature: Positive = 0.1,
        teacher_temperature: Positive = 0.04,
        warmup_teacher_temperature: Positive = 0.04,
        warmup_teacher_temperature_epochs: NonNegative = 0.0,
        center_momentum: Momentum = 0.9,
        momentum: Momentum = 0.996,
        freeze_last_layer_epochs: NonNegative = 1.0,
    ) -> None:
        super().__init__(backbone, feature_dim)
        self.head = DINOHead(
            self.feature_dim,
            out_dim,
            proj_hidden_dim,
            bottleneck_dim,
            use_bn=use_bn_in_head,
            norm_last_layer=norm_last_layer,
        )
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.student_temperature = float(student_temperature)
        self.teacher_temperature = float(teacher_temperature)
        self.warmup_teacher_temperature = float(warmup_teacher_temperature)
        self.warmup_teacher_temperature_epochs = float(warmup_teacher_temperature_epochs)
        self.center_momentum = float(center_momentum)
        self.base_momentum = float(momentum)
        self.final_momentum = 1.0
        self.freeze_last_layer_epochs = float(freeze_last_layer_epochs)

    def teacher_temperature_at(self, schedule: Schedule | None) -> float:
        """The teacher temperature at `schedule`'s step: linear warmup, then constant."""
        if self.warmup_teacher_temperature_epochs == 0:
            return self.teacher_temperature
        epochs = self.warmup_teacher_temperature_epochs
        at = self.scheduled(schedule, f"warmup_teacher_temperature_epochs={epochs:g}")
        warmup = at.steps(epochs)
        if at.step >= warmup:
            return self.teacher_temperature
        start, end = self.warmup_teacher_temperature, self.teacher_temperature
        return start + (end - start) * at.step / warmup

    def last_layer_frozen(self, schedule: Schedule | None) -> bool:
        if self.freeze_last_layer_epochs == 0:
            return False
        at = self.scheduled(schedule, f"freeze_last_layer_epochs={self.freeze_last_layer_epochs:g}")
        return at.step < at.steps(self.freeze_last_layer_epochs)

    def frozen_parameters(self, schedule: Schedule | None) -> list[nn.Parameter]:
        return list(self.head.last_layer.parameters()) if self.last_layer_frozen(schedule) else []

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        n_global = global_views(views)
        if len(views) < 2:
            raise ValueError(f"DINO needs at least 2 crops, got {len(views)}")
        student = encode_crops(lambda x: self.head(self.backbone(x)), views)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:n_global]))).chunk(n_global)
        teacher_temperature = self.teacher_temperature_at(schedule)
        loss = dino(student, teacher, self.center, self.student_temperature, teacher_temperature)
        # The teacher's targets as the loss saw them (centred with the centre before this step's update).
        targets = torch.softmax((torch.cat(teacher).float() - self.center) / teacher_temperature, dim=1)
        self.update_center(torch.cat(teacher))
        probs = torch.softmax(student[0].detach().float() / self.student_temperature, dim=1)
        return {
            "loss": loss,
            "entropy": -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean(),
            **assignment_entropies(targets, "teacher"),
            "spread": spread(student[0]),
        }

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the teacher outputs over the global batch; in training mode
        only, so that an eval-mode forward (a validation loss) leaves the centre as it was."""
        if not self.training:
            return
        # Every process holds a batch of the same size (the sampler drops the remainder).
        total = sum_over_processes(teacher_out.float().sum(dim=0, keepdim=True))
        mean = total / (teacher_out.shape[0] * world_info()[1])
        self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]
