"""`selfsup eval segmentation`: fine-tune the pretrained backbone with an FCN or DeepLabv3 head on Pascal VOC 2012.

The protocol of SSL segmentation transfer (MoCo, Barlow Twins, DenseCL): torchvision's FCNHead or DeepLabHead
on layer4 of a dilated ResNet (output stride 16 by default, 8 as in DeepLab), logits upsampled bilinearly to the
input, pixel-wise cross-entropy with 255 ignored, SGD with poly decay (1 - it / max_it)^0.9 per iteration, and
DeepLab's augmentation (random scale 0.5-2, crop, flip). No auxiliary head: the score is the one head's.
Evaluation predicts every image of the test split at full resolution, one at a time (VOC images differ in size,
and nothing is resized or padded), and reports the mIoU over classes and the pixel accuracy, in percent.

The output stride counts the ImageNet stem (stride 4 before layer1); a backbone with the CIFAR stem (no stride
before layer1) has a 4x finer feature map for the same setting. Other backbones cannot be dilated: the head
sits on their deepest feature map at its own stride (`output_stride: auto`), a ViT's patch tokens on their grid
(SETR's naive decoder with the FCN head) or a timm CNN's last stage, with inputs zero-padded to a multiple of
the patch size and the logits cropped back.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from tqdm import tqdm

from selfsup.data.batched_colour import normalize
from selfsup.data.loader import resolve_num_workers
from selfsup.data.segmentation import IGNORE_INDEX, VOC_CLASSES, TrainTransform, voc_segmentation
from selfsup.data.views import CROP_SIDE, split_mean_std
from selfsup.errors import UserError
from selfsup.eval.finetuning import fine_tune, sgd
from selfsup.eval.transfer import TaskResult, TransferJob
from selfsup.nets.pyramid import FeatureLevels, feature_levels
from selfsup.optim import poly_decay
from selfsup.settings import (
    AUTO_OR_COUNT,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    RANGE,
    TEXT,
    Declaration,
    check_section,
    one_of,
    optional,
)

HEADS = ("fcn", "deeplabv3")
OUTPUT_STRIDES = (8, 16, 32)
RESNET_OUTPUT_STRIDE = 16  # output_stride=auto on a ResNet
POLY_POWER = 0.9
SEGMENTATION_SETTINGS: Declaration = {
    "root": optional(TEXT),
    "train_list": TEXT,  # train | train_aug (VOC train + SBD) | another ImageSets/Segmentation list
    "sbd_root": optional(TEXT),
    "test_split": TEXT,
    "head": one_of(*HEADS),
    "output_stride": one_of("auto", *(str(s) for s in OUTPUT_STRIDES)),
    "crop_size": CROP_SIDE,
    "scale": RANGE,
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "lr": POSITIVE,
    "backbone_lr_scale": NON_NEGATIVE,
    "momentum": MOMENTUM,
    "weight_decay": NON_NEGATIVE,
    "num_workers": AUTO_OR_COUNT,
}


def _dilate_layer(layer: nn.Module, previous: int, dilation: int) -> None:
    """torchvision's `replace_stride_with_dilation` for one stage, applied to built convs: strides become 1,
    the formerly strided 3x3 conv keeps the previous dilation and every other 3x3 conv gets the new one."""
    for conv in (m for m in layer.modules() if isinstance(m, nn.Conv2d)):
        rate = dilation
        if conv.stride != (1, 1):
            conv.stride, rate = (1, 1), previous
        if conv.kernel_size == (3, 3):
            conv.dilation, conv.padding = (rate, rate), (rate, rate)


def dilate_resnet(backbone: nn.Module, output_stride: int) -> tvm.ResNet:
    """A copy of a torchvision ResNet whose layer4 (16) or layer3 and layer4 (8) trade stride for dilation.

    The convs are changed in place rather than rebuilt with `replace_stride_with_dilation`, because torchvision's
    BasicBlock (resnet18/34) refuses dilation; for Bottleneck ResNets the result is the same network. Weights and
    the stem (ImageNet or CIFAR) are the backbone's."""
    if not isinstance(backbone, tvm.ResNet):
        raise UserError(f"segmentation needs a torchvision ResNet backbone, got {type(backbone).__name__}")
    if output_stride not in OUTPUT_STRIDES:
        raise UserError(f"eval.segmentation.output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    net = copy.deepcopy(backbone)
    dilation = 1
    for layer in {8: (net.layer3, net.layer4), 16: (net.layer4,), 32: ()}[output_stride]:
        previous, dilation = dilation, dilation * 2
        _dilate_layer(layer, previous, dilation)
    return net


def _out_channels(net: tvm.ResNet) -> int:
    """Channels of layer4's output: the last BatchNorm of its last block (bn2 of BasicBlock, bn3 of Bottleneck)."""
    return [m for m in net.layer4[-1].modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


def aspp_rates(output_stride: int) -> tuple[int, ...]:
    """DeepLabv3's ASPP rates: (6, 12, 18) at output stride 16, doubled at 8 (Chen et al. 2017, section 4.1),
    and in general scaled so that they cover the same part of the image at any stride."""
    return tuple(max(1, rate * 16 // output_stride) for rate in (6, 12, 18))


class DeepestLevelSegmenter(nn.Module):
    """The head on the deepest feature map of a backbone that cannot be dilated (a ViT's patch grid, a timm
    CNN's last stage); inputs zero-padded to the stride the backbone needs, logits upsampled and cropped back
    to the input. `model(x)["out"]` as torchvision's FCN / DeepLabV3."""

    def __init__(self, levels: FeatureLevels, classifier: nn.Module) -> None:
        super().__init__()
        self.backbone, self.classifier = levels, classifier

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        height, width = images.shape[-2:]
        padded = self.backbone.pad(images)
        logits = self.classifier(self.backbone(padded)[-1])
        logits = F.interpolate(logits, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        return {"out": logits[..., :height, :width]}


def _head(head: str, channels: int, num_classes: int, output_stride: int) -> nn.Module:
    if head == "fcn":
        return FCNHead(channels, num_classes)
    return DeepLabHead(channels, num_classes, aspp_rates(output_stride))


def build_segmentation_model(
    backbone: nn.Module, head: str, output_stride: int | str = "auto", num_classes: int = len(VOC_CLASSES)
) -> nn.Module:
    """torchvision's FCN / DeepLabV3 on layer4 of a dilated copy of a ResNet `backbone` (output stride 16 at
    `auto`), or the head on the deepest feature map of any other backbone at its own stride; `model(x)["out"]`
    holds logits at the input's size. Every parameter is trainable, whatever the caller's flags."""
    if head not in HEADS:
        raise UserError(f"eval.segmentation.head must be one of {HEADS}, got {head!r}")
    if not isinstance(backbone, tvm.ResNet):
        levels = feature_levels(backbone, "segmentation")
        stride = levels.strides[-1]
        if output_stride not in ("auto", stride):
            raise UserError(
                f"eval.segmentation.output_stride={output_stride} dilates a ResNet; this backbone's features have "
                f"stride {stride}: set eval.segmentation.output_stride=auto"
            )
        classifier = _head(head, levels.channels[-1], num_classes, stride)
        return DeepestLevelSegmenter(levels, classifier).requires_grad_(True)
    stride = RESNET_OUTPUT_STRIDE if output_stride == "auto" else int(output_stride)
    net = dilate_resnet(backbone, stride)
    features = IntermediateLayerGetter(net, return_layers={"layer4": "out"})
    classifier = _head(head, _out_channels(net), num_classes, stride)
    model = FCN(features, classifier) if head == "fcn" else DeepLabV3(features, classifier)
    return model.requires_grad_(True)


def build_optimizer(
    model: nn.Module, lr: float, backbone_lr_scale: float, momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD with the head at `lr` and the pretrained backbone at `lr * backbone_lr_scale`."""
    groups = [(model.backbone.parameters(), lr * backbone_lr_scale), (model.classifier.parameters(), lr)]
    return sgd(groups, momentum, weight_decay)


def segmentation_loss(model: nn.Module, images: Tensor, masks: Tensor) -> Tensor:
    """Pixel-wise cross-entropy over the labeled pixels, written as sum / count so that a batch with none
    gives 0, not NaN weights."""
    logits = model(images)["out"]
    labeled = (masks != IGNORE_INDEX).sum().clamp_min(1)
    return F.cross_entropy(logits.float(), masks, ignore_index=IGNORE_INDEX, reduction="sum") / labeled


def segmentation_scores(confusion: Tensor, class_names: Sequence[str] = VOC_CLASSES) -> dict[str, Any]:
    """mIoU and pixel accuracy (percent) from a [C, C] confusion matrix (rows ground truth, columns prediction,
    ignored pixels already left out), plus per-class IoU (percent) by class name.

    A class absent from both the ground truth and the predictions of the whole split has no IoU (None) and is
    left out of the mean, instead of counting as 0 (torchmetrics' zero_division) or 100. A class that is only
    predicted, or only in the ground truth, counts with IoU 0. VOC val holds all 21 classes, so on it the mean
    is over all 21, as in the official devkit."""
    confusion = confusion.double()
    total = confusion.sum()
    if total == 0:
        raise UserError("no labeled pixels to score: every ground-truth pixel of the test split is 255")
    hits = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - hits
    scored = union > 0
    iou = 100.0 * hits / union.clamp_min(1)
    return {
        "miou": iou[scored].mean().item(),
        "pixel_acc": 100.0 * (hits.sum() / total).item(),
        "iou": {name: iou[c].item() if scored[c] else None for c, name in enumerate(class_names)},
        "classes_scored": int(scored.sum()),
    }


@torch.inference_mode()
def confusion_matrix(
    model: nn.Module,
    dataset: Dataset,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    num_workers: int = 0,
    progress: bool = False,
) -> Tensor:
    """Predict each image at full resolution (batch 1) and accumulate torchmetrics' confusion matrix (CPU)."""
    model.eval()
    metric = MulticlassConfusionMatrix(num_classes=len(VOC_CLASSES), ignore_index=IGNORE_INDEX).to(device)
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers, pin_memory=device.type == "cuda")
    for image, mask in tqdm(loader, desc="segmentation eval", disable=not progress, leave=False, dynamic_ncols=True):
        logits = model(normalize(image.to(device, non_blocking=True), mean, std))["out"]
        metric.update(logits.argmax(1), mask.to(device, non_blocking=True))
    return metric.compute().cpu()


def _check_settings(seg: DictConfig) -> None:
    """Values that cannot work fail before any data is read: each against its declaration, then the batch
    that DeepLabv3 needs."""
    check_section("eval.segmentation", OmegaConf.to_container(seg), SEGMENTATION_SETTINGS)
    # BatchNorm in training mode needs two values per channel; ASPP's image-pooling branch has one per image.
    if seg.head == "deeplabv3" and seg.batch_size < 2:
        raise UserError("eval.segmentation.batch_size must be >= 2 with head=deeplabv3")


def _roots(cfg: DictConfig) -> tuple[Path, Path | None]:
    """eval.segmentation.root, by default <data root>/VOCdevkit/VOC2012; and sbd_root (None when unset)."""
    seg = cfg.eval.segmentation
    root = Path(seg.root) if seg.root else Path(cfg.data.root or ".") / "VOCdevkit" / "VOC2012"
    return root.expanduser(), None if seg.sbd_root is None else Path(seg.sbd_root).expanduser()


def _epoch_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int, device: torch.device) -> DataLoader:
    """Shuffled, drop-last; the order (and the workers' augmentation seeds) follow `seed` alone."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),
    )


def run(job: TransferJob) -> TaskResult:
    """Fine-tune on the train list, saving `job.state_path` after every epoch (and resuming from it), then
    score the test split."""
    cfg, seg = job.cfg, job.cfg.eval.segmentation
    _check_settings(seg)
    root, sbd_root = _roots(cfg)
    train_set = voc_segmentation(root, seg.train_list, sbd_root, TrainTransform(seg.crop_size, seg.scale))
    test_set = voc_segmentation(root, seg.test_split)
    if len(train_set) < seg.batch_size:
        raise UserError(f"{seg.train_list} has {len(train_set)} images, fewer than eval.segmentation.batch_size")
    mean, std = split_mean_std(cfg.data, cfg.views)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_segmentation_model(job.backbone, seg.head, seg.output_stride).to(job.device)
    optimizer = build_optimizer(model, seg.lr, seg.backbone_lr_scale, seg.momentum, seg.weight_decay)
    params = OmegaConf.to_container(seg)
    num_workers = resolve_num_workers(seg.num_workers, job.device.type, 1)
    steps_per_epoch = len(train_set) // seg.batch_size

    def batches(epoch: int):
        # Seeded per epoch: order and augmentation of epoch e are the same whether or not the run was resumed.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + epoch)
            for images, masks in _epoch_loader(train_set, seg.batch_size, num_workers, cfg.seed + epoch, job.device):
                yield normalize(images.to(job.device, non_blocking=True), mean, std), masks.to(job.device)

    trained = fine_tune(
        job,
        "segmentation",
        model,
        optimizer,
        batches,
        lambda batch: segmentation_loss(model, *batch),
        lambda epoch, step: poly_decay(step, seg.epochs * steps_per_epoch, POLY_POWER),
        seg.epochs,
        steps_per_epoch,
    )
    losses = trained.history
    scores = segmentation_scores(confusion_matrix(model, test_set, mean, std, job.device, num_workers, job.progress))
    return TaskResult(
        metrics={
            "miou": scores["miou"],
            "pixel_acc": scores["pixel_acc"],
            **({"train_loss": losses[-1]} if losses else {}),
        },
        params=params,
        dataset={
            "name": "voc2012",
            "root": str(root),
            "sbd_root": None if sbd_root is None else str(sbd_root),
            "train_list": seg.train_list,
            "test_split": seg.test_split,
            "train_size": len(train_set),
            "test_size": len(test_set),
            "classes": list(VOC_CLASSES),
        },
        extra={
            "iou": scores["iou"],
            "classes_scored": scores["classes_scored"],
            "train_loss": losses,
            "epochs_trained": trained.epochs_trained,
            "evaluation": "full resolution, batch 1",
        },
    )
