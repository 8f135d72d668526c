"""Fine-tuning: the whole pretrained backbone plus a linear head trained on a labeled dataset.

The protocol of the semi-supervised / transfer tables of SimCLR and BYOL, at the scale of a CIFAR or STL-10
evaluation: standard supervised augmentation (pad-and-crop for small images, random-resized crop otherwise,
horizontal flip), SGD with momentum and weight decay, a cosine learning-rate schedule per step, the linear
lr-scaling rule, and top-1/top-5 test accuracy. The training state is saved after every epoch, so an
interrupted fine-tuning resumes where it stopped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader

from selfsup.config import compose_group, group_options
from selfsup.data.batched_colour import normalize
from selfsup.data.loader import Transformed, dataset_labels, resolve_num_workers
from selfsup.data.views import CROP_SIDE, eval_transform, split_mean_std
from selfsup.errors import UserError
from selfsup.eval.features import labeled_dataset
from selfsup.eval.finetuning import fine_tune, sgd
from selfsup.eval.knn import topk_accuracy
from selfsup.eval.transfer import TaskResult, TransferJob
from selfsup.optim import layerwise_lr_groups, warmup_cosine
from selfsup.settings import (
    AUTO_OR_COUNT,
    BELOW_ONE,
    FRACTION,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    TEXT,
    Declaration,
    check_section,
    check_value,
    one_of,
    optional,
)

AUGMENTS = ("auto", "pad_crop", "resized_crop")


def finetune_settings() -> Declaration:
    """`eval.finetune.*`: the downstream data (another data group, its splits and subset), the augmentation,
    and SGD with a cosine schedule for the backbone and the new linear head."""
    return {
        "data": optional(one_of(*group_options("data"))),
        "train_split": optional(TEXT),
        "test_split": optional(TEXT),
        "train_subset": optional(POSITIVE_INT),
        "crop_size": optional(CROP_SIDE),
        "augment": one_of(*AUGMENTS),
        "epochs": POSITIVE_INT,
        "chunk_epochs": optional(POSITIVE_INT),
        "batch_size": POSITIVE_INT,
        "lr": POSITIVE,  # x batch_size / 256
        "backbone_lr_scale": NON_NEGATIVE,
        "layer_decay": FRACTION,
        "momentum": MOMENTUM,
        "weight_decay": NON_NEGATIVE,
        "label_smoothing": BELOW_ONE,
        "num_workers": AUTO_OR_COUNT,
    }


def finetune_data(cfg: DictConfig) -> DictConfig:
    """The labeled dataset to fine-tune on: the run's own (`eval.finetune.data: null`) or another data
    group, read from the same data root as the run."""
    section = cfg.eval.finetune
    if section.data is None:
        data = cfg.data.copy()
    else:
        data = compose_group("data", section.data).data
        data.root = cfg.data.root
    data.eval_train_split = section.train_split or data.eval_train_split
    data.test_split = section.test_split or data.test_split
    return data


def train_augmentation(augment: str, crop_size: int) -> T.Compose:
    """Supervised augmentation on uint8 [3, H, W]: pad-and-crop (the CIFAR ResNet recipe, crops <= 64 px
    under `auto`) or random-resized crop (the ImageNet recipe), each with a horizontal flip."""
    check_value("eval.finetune.augment", augment, one_of(*AUGMENTS))
    if augment == "pad_crop" or (augment == "auto" and crop_size <= 64):
        crop = [T.Resize(crop_size, antialias=True), T.RandomCrop(crop_size, padding=crop_size // 8)]
    else:
        crop = [T.RandomResizedCrop(crop_size, scale=(0.08, 1.0), antialias=True)]
    return T.Compose([*crop, T.RandomHorizontalFlip()])


class Classifier(nn.Module):
    """Backbone + linear head on normalised images; the unit that is fine-tuned and saved."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, mean: Any, std: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(normalize(images, self.mean, self.std)))


@torch.inference_mode()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, autocast: torch.dtype | None
) -> tuple[Tensor, Tensor]:
    """Class scores and labels of a whole split (model in eval mode: BatchNorm running statistics)."""
    model.eval()
    scores, labels = [], []
    for images, targets in loader:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            scores.append(model(images.to(device, non_blocking=True)).float().cpu())
        labels.append(targets)
    return torch.cat(scores), torch.cat(labels).long()


def run(job: TransferJob) -> TaskResult:
    """Fine-tune `job.backbone` with a new linear head; resume from `job.state_path` when it exists."""
    cfg, section, device = job.cfg, job.cfg.eval.finetune, job.device
    check_section("eval.finetune", OmegaConf.to_container(section), finetune_settings())
    data = finetune_data(cfg)
    crop_size = section.crop_size or cfg.views.crop_size
    train_set = labeled_dataset(
        data, data.eval_train_split, section.train_subset, cfg.seed, "eval.finetune.train_subset"
    )
    test_set = labeled_dataset(data, data.test_split, None, cfg.seed, "eval.finetune.test_split")
    num_classes = int(max(dataset_labels(train_set).max(), dataset_labels(test_set).max())) + 1
    if len(train_set) < section.batch_size:
        raise UserError(
            f"eval.finetune.batch_size={section.batch_size} is larger than the {len(train_set)} training images"
        )

    mean, std = split_mean_std(data, cfg.views)
    model = Classifier(job.backbone, job.feature_dim, num_classes, mean, std).to(device)
    generator = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():  # the linear-eval init (MoCo): N(0, 0.01), zero bias
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=generator) * 0.01)
        model.head.bias.zero_()
    lr = section.lr * section.batch_size / 256
    backbone_groups = layerwise_lr_groups(model.backbone, lr * section.backbone_lr_scale, section.layer_decay)
    optimizer = sgd(
        [*backbone_groups, (model.head.parameters(), lr)],
        section.momentum,
        section.weight_decay,
    )
    workers = resolve_num_workers(section.num_workers, device.type, 1)
    train_data = Transformed(train_set, train_augmentation(section.augment, crop_size))
    test_loader = DataLoader(
        Transformed(test_set, eval_transform(crop_size)), batch_size=cfg.eval.batch_size, num_workers=workers
    )
    steps_per_epoch = len(train_set) // section.batch_size
    total = section.epochs * steps_per_epoch

    def batches(epoch: int):
        loader = DataLoader(
            train_data,
            batch_size=section.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            generator=torch.Generator().manual_seed(cfg.seed + epoch),  # the same order after a resume
        )
        with torch.random.fork_rng(devices=[]):  # augmentations drawn from a per-epoch seed: exact resume
            torch.random.default_generator.manual_seed(cfg.seed + epoch)
            yield from loader

    def loss(batch) -> Tensor:
        images, targets = batch
        logits = model(images.to(device, non_blocking=True))
        return F.cross_entropy(logits.float(), targets.to(device), label_smoothing=section.label_smoothing)

    trained = fine_tune(
        job,
        "finetune",
        model,
        optimizer,
        batches,
        loss,
        lambda epoch, step: warmup_cosine(step, total, 0, 1.0, 0.0),
        section.epochs,
        steps_per_epoch,
        section.chunk_epochs,
    )
    history = trained.history
    scores, labels = predict(model, test_loader, device, job.autocast)
    return TaskResult(
        complete=trained.complete,
        metrics={**topk_accuracy(scores, labels), **({"train_loss": history[-1]} if history else {})},
        params={**OmegaConf.to_container(section), "effective_lr": lr, "crop_size": crop_size},
        dataset={
            "name": data.name,
            "train_split": data.eval_train_split,
            "test_split": data.test_split,
            "train_size": len(train_set),
            "test_size": len(test_set),
            "num_classes": num_classes,
        },
        extra={"train_loss_per_epoch": history, "epochs_trained": trained.epochs_trained},
    )
