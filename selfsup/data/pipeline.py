"""The training data path from a config: dataset, sharded resumable sampler, loader (crops batched on the
device or per image in workers) and the batched colour ops that turn a loader batch into the method's views."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from selfsup.data.batched_colour import BatchAugment
from selfsup.data.loader import (
    DeviceCropLoader,
    ResumableSampler,
    crop_loader,
    pretrain_dataset,
    resolve_num_workers,
    shard_sampler,
)
from selfsup.data.views import crops_of_batch, split_mean_std
from selfsup.precision import resolve_channels_last


def data_pipeline(
    cfg: DictConfig, device: torch.device, rank: int, world: int, local_batch: int
) -> tuple[Dataset, DataLoader | DeviceCropLoader, ResumableSampler, BatchAugment]:
    """The training data path: crop/flip batched on `device` for a dataset held in memory
    (data.crop_on_device), else per image on uint8 in loader workers; then colour ops batched on `device`."""
    dataset = pretrain_dataset(cfg.data, cfg.seed)
    mean, std = split_mean_std(cfg.data, cfg.views)
    augment = BatchAugment(cfg.views, mean, std).to(device)
    sampler = shard_sampler(dataset, local_batch, cfg.seed, rank, world)
    num_workers = resolve_num_workers(cfg.trainer.num_workers, device.type, cfg.trainer.devices)
    generator = torch.Generator().manual_seed(cfg.seed + rank)
    loader = crop_loader(dataset, cfg.data, cfg.views, sampler, local_batch, device, num_workers, generator)
    return dataset, loader, sampler, augment


def views_channels_last(cfg: DictConfig, precision: str, device_type: str, processes: int) -> bool:
    """trainer.channels_last resolved for the view batch one process feeds its network per micro-step."""
    t = cfg.trainer
    view_pixels = t.batch_size // (processes * t.accumulate) * cfg.views.crop_size**2
    return resolve_channels_last(t.channels_last, precision, device_type, view_pixels)


def device_views(batch: Any, augment: BatchAugment, device: torch.device, channels_last: bool) -> list[torch.Tensor]:
    """A collated loader batch as the method's input: augmented float views on `device`, in view order."""
    views = [augment(crop, v) for v, crop in enumerate(crops_of_batch(batch, device))]
    if channels_last:
        views = [view.contiguous(memory_format=torch.channels_last) for view in views]
    return views
