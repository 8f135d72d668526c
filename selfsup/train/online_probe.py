"""Online linear probe: a linear classifier trained alongside pretraining on detached features of each step's
first view and scored with the kNN monitor (the SimCLR toolbox's online linear evaluation), so that a run shows
a linear accuracy curve without a separate `selfsup eval linear` per checkpoint.

It must not change what it measures: the features come from the representation in eval mode without
gradients (no BatchNorm statistic moves, no dropout or drop-path draw), and the classifier is initialised from
its own generator, not the global RNG that the pretraining draws from. A run with the probe ends with the
same weights as the run without it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from selfsup.eval.knn import topk_accuracy
from selfsup.eval.linear import linear_classifier


class OnlineLinearProbe:
    """BatchNorm without affine (the features' scale differs from method to method) + Linear, trained by SGD
    with momentum at a constant lr on every step's labelled images; gradients are averaged over processes."""

    def __init__(self, feature_dim: int, num_classes: int, lr: float, device: torch.device, seed: int) -> None:
        linear = linear_classifier(feature_dim, num_classes, torch.Generator().manual_seed(seed))
        self.classifier = nn.Sequential(nn.BatchNorm1d(feature_dim, affine=False), linear).to(device)
        self.optimizer = torch.optim.SGD(self.classifier.parameters(), lr=lr, momentum=0.9)

    def step(
        self, representation: nn.Module, view: torch.Tensor, labels: torch.Tensor, autocast: torch.dtype | None
    ) -> None:
        """One SGD step on the labelled images of `view` (labels < 0 mark unlabelled ones)."""
        labels = labels.to(view.device)
        keep = labels >= 0
        was_training = representation.training
        representation.eval()
        try:
            autocasting = torch.autocast(view.device.type, dtype=autocast or torch.float32, enabled=bool(autocast))
            with torch.no_grad(), autocasting:
                features = representation(view[keep]).float()
        finally:
            representation.train(was_training)
        self.classifier.train()
        self.optimizer.zero_grad(set_to_none=True)
        if len(features) > 1:  # BatchNorm needs two; a process without labelled images adds zero gradients
            F.cross_entropy(self.classifier(features), labels[keep]).backward()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for p in self.classifier.parameters():
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                dist.all_reduce(grad)
                p.grad = grad / dist.get_world_size()
        if any(p.grad is not None for p in self.classifier.parameters()):
            self.optimizer.step()

    @torch.no_grad()
    def score(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Top-1 / top-5 on extracted (test) features, with the BatchNorm's running statistics."""
        self.classifier.eval()
        device = next(self.classifier.parameters()).device
        return topk_accuracy(self.classifier(features.to(device)).cpu(), labels)

    def state_dict(self) -> dict[str, Any]:
        return {"classifier": self.classifier.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
