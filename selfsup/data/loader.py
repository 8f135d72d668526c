"""DataLoader wiring: datasets -> multi-view uint8 batches, one shard per process, seeded per epoch."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from selfsup.data.batched_crops import BatchCropFlip
from selfsup.data.sources import ImageDataset, balanced_subset, build_dataset
from selfsup.data.views import CropFlip
from selfsup.errors import UserError


class Transformed(Dataset):
    """Applies a per-sample uint8 transform (crop/flip, eval resize) in the loader workers."""

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.base[index]
        return self.transform(image), label


def resolve_num_workers(setting: int | str, device_type: str, processes_per_node: int) -> int:
    """`auto`: on a GPU, enough workers to feed it (up to 8 per process); on a small CPU machine none,
    because loader workers take cores from the training step itself (measured in benchmarks/RESULTS.md)."""
    if setting != "auto":
        return int(setting)
    cores = os.cpu_count() or 1
    if device_type == "cpu":
        return 0 if cores <= 4 else min(4, cores // (2 * processes_per_node))
    return max(1, min(8, cores // processes_per_node))


def dataset_labels(dataset: Dataset) -> np.ndarray:
    """Labels of an ImageDataset or of a Subset of one."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[np.asarray(dataset.indices)]
    return np.asarray(dataset.labels)  # type: ignore[attr-defined]


def dataset_classes(dataset: Dataset) -> list[str]:
    """Class names of an ImageDataset, or of a Subset or Transformed view of one."""
    while isinstance(dataset, Subset | Transformed):
        dataset = dataset.dataset if isinstance(dataset, Subset) else dataset.base
    return list(dataset.classes)  # type: ignore[attr-defined]


def load_split(
    data_cfg: DictConfig, split: str, subset: int | None = None, seed: int = 0, subset_key: str = "data.subset"
) -> ImageDataset | Subset:
    """Split `split` of the configured dataset with its data.bad_images policy, reduced to `subset`
    class-balanced images when set; `subset_key` names the setting that asked for the subset in errors."""
    bad_images = data_cfg.get("bad_images", "fail")  # absent from configs saved before the option existed
    dataset = build_dataset(data_cfg.name, data_cfg.root, split, download=data_cfg.download, bad_images=bad_images)
    if subset is None:
        return dataset
    if subset > len(dataset):
        raise UserError(f"{subset_key}={subset} is larger than the {len(dataset)} images of {data_cfg.name} {split}")
    return Subset(dataset, balanced_subset(dataset.labels, subset, seed).tolist())


def pretrain_dataset(data_cfg: DictConfig, seed: int) -> ImageDataset | Subset:
    """The pretraining split, reduced to `data.subset` class-balanced images when set."""
    return load_split(data_cfg, data_cfg.train_split, data_cfg.subset, seed)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way, so a resumed run continues where it stopped."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Epoch `epoch`'s order (the same as any run with this seed), from its `start`-th sample."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def shard_sampler(dataset: Dataset, batch_size: int, seed: int, rank: int, world: int) -> ResumableSampler:
    """This process's shuffled, drop-last shard of `dataset`; call `set_position(epoch, start)` per epoch."""
    if len(dataset) < batch_size * world:  # type: ignore[arg-type]
        raise UserError(
            f"the dataset has {len(dataset)} images, fewer than one global batch of {batch_size * world}; "  # type: ignore[arg-type]
            "lower trainer.batch_size"
        )
    return ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)


def in_memory_images(dataset: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(uint8 [N, 3, H, W] images, int64 [N] labels) of a dataset held in memory as one array (or a Subset
    of one); None for datasets read from files."""
    if isinstance(dataset, Subset):
        whole = in_memory_images(dataset.dataset)
        if whole is None:
            return None
        indices = np.asarray(dataset.indices)
        return whole[0][indices], whole[1][indices]
    if isinstance(dataset, ImageDataset) and dataset.images is not None:
        return dataset.images, dataset.labels
    return None


class DeviceCropLoader:
    """The loader of a dataset held on the training device as one uint8 tensor: each batch of the sampler's
    indices is gathered there and cropped by `crops` (BatchCropFlip), with no loader workers. Yields
    (crops, labels) as the worker loader does, already on the device."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        crops: Callable[[torch.Tensor], Any],
        sampler: Sampler,
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.images = torch.from_numpy(images).to(device)
        self.labels = torch.from_numpy(labels).to(device)
        self.crops, self.sampler, self.batch_size, self.device = crops, sampler, batch_size, device

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        order = torch.tensor(list(self.sampler), dtype=torch.long).to(self.device)  # one copy per epoch
        for k in range(len(self)):
            index = order[k * self.batch_size : (k + 1) * self.batch_size]
            yield self.crops(self.images[index]), self.labels[index]


def device_crop_arrays(setting: bool | str, dataset: Dataset, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """data.crop_on_device resolved for `dataset`: its arrays when its crops are drawn on the training device
    (auto: whenever it is held in memory as one array), None for per-image crops in loader workers."""
    mode = str(setting).lower()
    if mode not in ("auto", "true", "false"):
        raise UserError(f"data.crop_on_device={setting!r} must be auto, true or false")
    arrays = None if mode == "false" else in_memory_images(dataset)
    if arrays is None and mode == "true":
        raise UserError(
            f"data.crop_on_device=true needs a dataset held in memory as one array (cifar10, cifar100, svhn, "
            f"stl10, fashion_mnist, synthetic); {name} is read from image files: set data.crop_on_device=auto"
        )
    return arrays


def _leave_interrupts_to_the_trainer(_worker_id: int) -> None:
    """Loader workers ignore Ctrl-C (a terminal sends it to them too): the training process finishes its step,
    saves and shuts them down, whereas a worker dying of it first would fail the step waiting for its batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def crop_loader(
    dataset: Dataset,
    data_cfg: DictConfig,
    views: DictConfig,
    sampler: Sampler,
    batch_size: int,
    device: torch.device,
    num_workers: int,
    generator: torch.Generator | None = None,
    keep_workers: bool = True,
) -> DataLoader | DeviceCropLoader:
    """Drop-last batches of `sampler`'s indices as collated crops and flips (CropFlip's output): drawn batched
    on `device` for a dataset held in memory (data.crop_on_device), else per image on uint8 in `num_workers`
    loader workers, whose random draws follow `generator` (the global RNG when None). `keep_workers`: the
    same workers serve every pass (their random state runs on), else each pass starts new ones."""
    setting = data_cfg.get("crop_on_device", "auto")  # absent from configs saved before the option existed
    arrays = device_crop_arrays(setting, dataset, data_cfg.name)
    if arrays is not None:
        return DeviceCropLoader(*arrays, BatchCropFlip(views), sampler, batch_size, device)
    return DataLoader(
        Transformed(dataset, CropFlip(views)),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=keep_workers and num_workers > 0,
        generator=generator,
        worker_init_fn=_leave_interrupts_to_the_trainer,
    )


def eval_loader(dataset: Dataset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
