"""DINO (Caron et al. 2021): self-distillation from an EMA teacher with centering and sharpening."""

from __future__ import annotations

import torch
import torch.nn as nn
from omegaconf import DictConfig

from selfsup.dist import sum_over_processes, world_info
from selfsup.losses import dino
from selfsup.methods.base import METHODS, Method, encode_crops, global_views
from selfsup.methods.momentum import cosine_momentum, ema_update, frozen_copy
from selfsup.nets.heads import DINOHead


@METHODS.register("dino")
class DINO(Method):
    """The student sees every crop, the teacher the global views only (Algorithm 1). The teacher's
    outputs are centred by a running mean over the global batch (momentum `center_momentum`) and
    sharpened by a temperature warmed up linearly from `warmup_teacher_temp` to `teacher_temp` over
    `warmup_teacher_temp_epochs`; the teacher follows the student by EMA on BYOL's cosine schedule.
    The last layer gets no gradient during the first `freeze_last_layer_epochs`."""

    multi_crop = True

    def __init__(self, cfg: DictConfig, backbone: nn.Module, feature_dim: int) -> None:
        super().__init__(backbone, feature_dim)
        self.head = DINOHead(
            feature_dim,
            cfg.out_dim,
            cfg.proj_hidden_dim,
            cfg.bottleneck_dim,
            use_bn=cfg.use_bn_in_head,
            norm_last_layer=cfg.norm_last_layer,
        )
        self.teacher_backbone = frozen_copy(backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.student_temp = float(cfg.student_temp)
        self.teacher_temp = float(cfg.teacher_temp)
        self.warmup_teacher_temp = float(cfg.warmup_teacher_temp)
        self.warmup_teacher_temp_epochs = float(cfg.warmup_teacher_temp_epochs)
        self.center_momentum = float(cfg.center_momentum)
        self.base_momentum = float(cfg.momentum)
        self.freeze_last_layer_epochs = float(cfg.freeze_last_layer_epochs)

    def current_teacher_temp(self) -> float:
        warmup = self.epochs_to_steps(self.warmup_teacher_temp_epochs)
        if self.current_step >= warmup:
            return self.teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * self.current_step / warmup

    def forward(self, views: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        n_global = global_views(views)
        if len(views) < 2:
            raise ValueError(f"DINO needs at least 2 crops, got {len(views)}")
        frozen = self.current_step < self.epochs_to_steps(self.freeze_last_layer_epochs)
        student = encode_crops(lambda x: self.head(self.backbone(x), freeze_last_layer=frozen), views)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:n_global]))).chunk(n_global)
        loss = dino(student, teacher, self.center, self.student_temp, self.current_teacher_temp())
        self.update_center(torch.cat(teacher))
        probs = torch.softmax(student[0].detach().float() / self.student_temp, dim=1)
        return {"loss": loss, "entropy": -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean()}

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the teacher outputs over the global batch."""
        # Every process holds a batch of the same size (the sampler drops the remainder).
        total = sum_over_processes(teacher_out.float().sum(dim=0, keepdim=True))
        mean = total / (teacher_out.shape[0] * world_info()[1])
        self.center.mul_(self.center_momentum).add_(mean, alpha=1 - self.center_momentum)

    def after_optimizer_step(self, step: int, total_steps: int) -> None:
        tau = cosine_momentum(step, total_steps, self.base_momentum, 1.0)
        ema_update(self.teacher_backbone, self.backbone, tau)
        ema_update(self.teacher_head, self.head, tau)
