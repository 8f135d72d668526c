"""What every transfer task (fine-tuning, detection, segmentation) receives and returns.

`selfsup eval TASK` (eval/offline.py) loads the checkpoint, builds a `TransferJob` and calls the task's
`run(job) -> TaskResult`; it then adds provenance (config, checkpoint, cost, commit) and writes
`eval/<checkpoint>/<task>.json`. A task keeps its own resumable training state in `job.state_path`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig


@dataclass
class TransferJob:
    cfg: DictConfig  # the run's resolved config with the command's overrides; the task reads cfg.eval.<task>
    backbone: nn.Module  # torchvision ResNet with fc = Identity, pretrained weights loaded (images -> [B, D])
    feature_dim: int
    device: torch.device
    state_path: Path  # eval/<checkpoint>/<task>-state.pt: saved every epoch, removed by the caller when done
    progress: bool = True


@dataclass
class TaskResult:
    metrics: dict[str, float]  # e.g. top1/top5, map/map_50, miou
    params: dict[str, Any]  # the settings that produced the metrics (the task's config section)
    dataset: dict[str, Any]  # name, splits, sizes
    complete: bool = True  # False when a chunked training stopped early (chunk_epochs) and must be resumed
    extra: dict[str, Any] = field(default_factory=dict)  # per-class scores, training curves
