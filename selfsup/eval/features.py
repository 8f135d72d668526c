"""Frozen-backbone features of a labeled split, the input of kNN and linear evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from omegaconf import DictConfig
from torch.utils.data import Subset

from selfsup.data.batched_colour import normalize
from selfsup.data.loader import Transformed, dataset_labels, eval_loader, load_split
from selfsup.data.sources import ImageDataset
from selfsup.data.views import eval_transform
from selfsup.errors import UserError


@dataclass
class Features:
    features: torch.Tensor  # float32 [N, D]
    labels: torch.Tensor  # int64 [N]


def labeled_dataset(
    data_cfg: DictConfig, split: str, subset: int | None, seed: int, subset_key: str
) -> ImageDataset | Subset:
    """A split (optionally a class-balanced subset) that must be labeled: kNN, linear probe, fine-tuning."""
    dataset = load_split(data_cfg, split, subset, seed, subset_key)
    if (dataset_labels(dataset) < 0).any():
        raise UserError(f"split {split!r} of {data_cfg.name} has unlabeled images; evaluate on a labeled split")
    return dataset


def labeled_split(
    data_cfg: DictConfig, split_key: str, crop_size: int, subset: int | None = None, seed: int = 0
) -> Transformed:
    """The split named by `data.<split_key>` resized for evaluation, optionally a class-balanced subset of
    `subset` images (a smaller kNN bank / linear training set); refuses unlabeled data."""
    split = data_cfg[split_key]
    if split is None:
        raise UserError(f"data={data_cfg.name} has no labeled {split_key}; evaluate on a labeled dataset")
    dataset = labeled_dataset(data_cfg, split, subset, seed, "eval.train_subset")
    return Transformed(dataset, eval_transform(crop_size))


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    dataset: Transformed,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    batch_size: int = 256,
    num_workers: int = 2,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> Features:
    """Run the backbone in eval mode over the dataset; features come back float32 on the CPU."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for images, targets in eval_loader(dataset, batch_size, num_workers):
            x = normalize(images.to(device, non_blocking=True), mean, std)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
                feats.append(backbone(x).float().cpu())
            labels.append(targets)
    finally:
        backbone.train(was_training)
    return Features(torch.cat(feats), torch.cat(labels).long())
