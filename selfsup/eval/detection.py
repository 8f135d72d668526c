"""Detection transfer: Faster R-CNN on the pretrained backbone, trained on VOC, COCO or Penn-Fudan and scored by
COCO-style box mAP (pycocotools through torchmetrics).

Two standard heads (`eval.detection.architecture`), both built from torchvision's detection package:
- fpn: a 256-channel pyramid with torchvision's fasterrcnn_resnet50_fpn defaults, over the backbone's feature
  levels (nets/pyramid.py): a ResNet's layer1..layer4 or a timm model's last four levels through torchvision's
  FPN, or a plain ViT's patch grid through ViTDet's simple feature pyramid (strides 4-32, no top-down path);
- c4 (ResNets): Detectron's R50-C4, the VOC protocol of MoCo and its successors: conv1..layer3 as the trunk,
  one feature map with 15 anchors per location, 14x14 RoIAlign, and layer4 + average pooling as the box head.
`trainable_layers` follows torchvision: the deepest N stages are trained (ResNet: layer4, layer3, ...; a timm
model's levels; a ViT's blocks), the whole backbone with its stem at 5; in c4 this includes the layer4 box
head, so trainable_layers=0 trains only the RPN and the predictor. With `norm: train` the running statistics
of frozen layers still update, as in torchvision; `norm: sync` synchronises statistics across processes only,
so a single process trains plain BatchNorm.

Training: SGD on the trainable parameters, a step schedule per epoch (or a constant lr after
`constant_lr_after` epochs, the VICReg study's protocol), random horizontal flips. Images without any
trainable box stay in training as negatives. The state is saved after every epoch and `chunk_epochs`
bounds one invocation, so long schedules run as several resumed calls; every call scores the current model.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf
from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from tqdm import tqdm

from selfsup.data.detection import DETECTION_FORMATS, DetectionDataset, build_detection_dataset, default_detection_root
from selfsup.data.loader import resolve_num_workers
from selfsup.data.views import split_mean_std
from selfsup.errors import UserError, require_extra
from selfsup.eval.finetuning import fine_tune, sgd
from selfsup.eval.transfer import TaskResult, TransferJob
from selfsup.nets.pyramid import (
    ALL_STAGES,
    FeatureLevels,
    ResNetLevels,
    SimpleFeaturePyramid,
    feature_levels,
    freeze_stages,
    pyramid_levels,
)
from selfsup.optim import step_decay
from selfsup.settings import (
    AUTO_OR_COUNT,
    COUNT,
    MOMENTUM,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    TEXT,
    Declaration,
    Rule,
    check_section,
    list_of,
    one_of,
    optional,
)

ARCHITECTURES = ("fpn", "c4")
NORMS = ("frozen", "sync", "train")
C4_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
DETECTION_SETTINGS: Declaration = {
    "format": one_of(*DETECTION_FORMATS),
    "root": optional(TEXT),
    "train_split": TEXT,
    "test_split": TEXT,
    "architecture": one_of(*ARCHITECTURES),
    "norm": one_of(*NORMS),
    "trainable_layers": Rule(lambda v: COUNT.ok(v) and v <= ALL_STAGES, f"an integer in 0..{ALL_STAGES}"),
    **{key: POSITIVE_INT for key in ("min_size", "max_size", "epochs", "batch_size")},
    "chunk_epochs": optional(POSITIVE_INT),
    "lr": POSITIVE,
    "momentum": MOMENTUM,
    "weight_decay": NON_NEGATIVE,
    "lr_step_epochs": list_of(POSITIVE_INT),
    "lr_gamma": POSITIVE,
    "constant_lr_after": optional(COUNT),
    "constant_lr": optional(POSITIVE),
    "num_workers": AUTO_OR_COUNT,
    "roi_batch_size": POSITIVE_INT,
    "rpn_test_proposals": POSITIVE_INT,
}

Target = dict[str, Any]


def check_settings(det: DictConfig) -> None:
    """Refuse settings that cannot train, before any data is read: each against its declaration, then the
    pair that only works together, and the package that computes mAP."""
    check_section("eval.detection", OmegaConf.to_container(det), DETECTION_SETTINGS)
    require_extra("pycocotools", "detection", "detection mAP")
    if (det.constant_lr_after is None) != (det.constant_lr is None):
        raise UserError("eval.detection: set constant_lr_after and constant_lr together")


def detection_root(cfg: DictConfig) -> Path:
    """eval.detection.root, or the format's conventional folder under data.root."""
    det = cfg.eval.detection
    if det.root is not None:
        return Path(det.root).expanduser()
    if cfg.data.get("root") is None:
        raise UserError("eval.detection.root is not set and the run has no data.root; set eval.detection.root=DIR")
    return default_detection_root(det.format, cfg.data.root)


# ----------------------------------------------------------------------------------------------------------
# Model


def _convert_norm(levels: FeatureLevels, norm: str) -> FeatureLevels:
    """frozen: every BatchNorm (timm's BatchNormAct2d too) becomes frozen with its statistics and affine, because
    detection batches (a few large images) are too small to estimate batch statistics; sync: SyncBatchNorm."""
    if norm == "frozen":
        return freeze_batch_norm_2d(levels)
    if norm == "sync":
        return convert_sync_batchnorm(levels)
    return levels


class PyramidBackbone(nn.Module):
    """A backbone's feature levels -> `out_channels` maps at every level plus a max-pooled extra one: torchvision's
    FPN over a hierarchical backbone's levels (as in fasterrcnn_resnet50_fpn), ViTDet's simple pyramid over a
    plain ViT's single map."""

    def __init__(self, levels: FeatureLevels, out_channels: int = 256) -> None:
        super().__init__()
        self.body = levels
        if levels.plain:
            self.fpn = SimpleFeaturePyramid(levels.channels[0], levels.strides[0], out_channels)
        else:
            self.fpn = FeaturePyramidNetwork(levels.channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(self.body.pad(images))
        return self.fpn(OrderedDict((str(i), level) for i, level in enumerate(maps)))


def build_detector(
    backbone: nn.Module, num_classes: int, det: DictConfig, mean: Sequence[float], std: Sequence[float]
) -> FasterRCNN:
    """Faster R-CNN (fpn or c4) over a copy of `backbone` for `num_classes` object classes plus background;
    inputs are float images in [0, 1], normalised inside the model with the pretraining mean/std."""
    levels = _convert_norm(feature_levels(backbone, "detection"), det.norm)
    freeze_stages(levels, det.trainable_layers)
    common = {
        "min_size": det.min_size,
        "max_size": det.max_size,
        "image_mean": list(mean),
        "image_std": list(std),
        "box_batch_size_per_image": det.roi_batch_size,
        "rpn_post_nms_top_n_test": det.rpn_test_proposals,
    }
    if det.architecture == "fpn":
        # torchvision's FPN defaults: one anchor size per level (32 px at the finest, doubling), 7x7 RoIAlign
        # over every level but the extra one
        body = PyramidBackbone(levels)
        count = pyramid_levels(levels)
        return FasterRCNN(
            body,
            num_classes=num_classes + 1,
            rpn_anchor_generator=AnchorGenerator(
                sizes=tuple((32 * 2**i,) for i in range(count)), aspect_ratios=((0.5, 1.0, 2.0),) * count
            ),
            box_roi_pool=MultiScaleRoIAlign([str(i) for i in range(count - 1)], output_size=7, sampling_ratio=2),
            **common,
        )
    if not isinstance(levels, ResNetLevels):
        raise UserError(
            "eval.detection.architecture=c4 uses a ResNet's layer4 as the box head; this backbone has none: "
            "set eval.detection.architecture=fpn"
        )
    trunk = nn.Sequential(OrderedDict((name, getattr(levels, name)) for name in C4_TRUNK))
    trunk.out_channels = levels.channels[2]
    return FasterRCNN(
        trunk,
        rpn_anchor_generator=AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
        box_head=nn.Sequential(levels.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        box_predictor=FastRCNNPredictor(levels.channels[3], num_classes + 1),
        **common,
    )


# ----------------------------------------------------------------------------------------------------------
# Training


def _as_lists(batch: list[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Collate into lists: detection images differ in size and targets in box count."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def _loader(dataset: Dataset, batch_size: int, workers: int, generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=generator is not None,
        generator=generator,
        num_workers=workers,
        collate_fn=_as_lists,
    )


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Mirror an image [C, H, W] and its xyxy pixel-edge boxes (x -> W - x, so x1 and x2 swap)."""
    x1, y1, x2, y2 = target["boxes"].unbind(-1)
    width = image.shape[-1]
    boxes = torch.stack([width - x2, y1, width - x1, y2], dim=-1)
    return image.flip(-1), {**target, "boxes": boxes}


def _to_model(image: Tensor, target: Target, device: torch.device) -> tuple[Tensor, Target]:
    """uint8 image -> float [0, 1] on the device (the model normalises); crowd / difficult boxes dropped."""
    keep = target["iscrowd"] == 0
    return image.to(device, non_blocking=True).float().div_(255), {
        "boxes": target["boxes"][keep].to(device),
        "labels": target["labels"][keep].to(device),
    }


def detection_loss(model: nn.Module, images: list[Tensor], targets: list[Target]) -> Tensor:
    """The summed Faster R-CNN training losses (RPN and box head) of a batch already on the device."""
    return sum(model(images, targets).values())


def epoch_batches(dataset: Dataset, batch_size: int, workers: int, device: torch.device, seed: int):
    """One pass in an order and with flips drawn from `seed` (the same after a resume), as model inputs."""
    flips = torch.Generator().manual_seed(seed)
    for images, targets in _loader(dataset, batch_size, workers, torch.Generator().manual_seed(seed)):
        flip = (torch.rand(len(images), generator=flips) < 0.5).tolist()
        pairs = [hflip(im, t) if f else (im, t) for im, t, f in zip(images, targets, flip, strict=True)]
        inputs, model_targets = zip(*[_to_model(im, t, device) for im, t in pairs], strict=True)
        yield list(inputs), list(model_targets)


def detection_lr_factor(det: DictConfig) -> Callable[[int, int], float]:
    """The lr multiplier of epoch e: the step schedule (x lr_gamma at each of lr_step_epochs), or
    constant_lr / lr from constant_lr_after on (the VICReg study's protocol)."""

    def factor(epoch: int, step: int) -> float:
        if det.constant_lr_after is not None and epoch >= det.constant_lr_after:
            return det.constant_lr / det.lr
        return step_decay(epoch, list(det.lr_step_epochs), det.lr_gamma)

    return factor


# ----------------------------------------------------------------------------------------------------------
# Evaluation


@torch.inference_mode()
def predict(
    model: nn.Module, dataset: Dataset, batch_size: int, workers: int, device: torch.device, progress: bool = False
) -> tuple[list[Target], list[Target]]:
    """Detections (boxes, scores, labels on the CPU) and ground truth for every image of `dataset`."""
    model.eval()
    predictions, truths = [], []
    for images, targets in tqdm(_loader(dataset, batch_size, workers), desc="detection eval", disable=not progress):
        outputs = model([im.to(device, non_blocking=True).float().div_(255) for im in images])
        predictions += [{k: v.cpu() for k, v in out.items()} for out in outputs]
        truths += [{k: t[k] for k in ("boxes", "labels", "iscrowd")} for t in targets]
    return predictions, truths


def detection_map(
    predictions: list[Target], targets: list[Target], class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """COCO box AP with pycocotools, in percent: `map` (IoU .50:.95), `map_50` (the VOC metric's threshold,
    with COCO's 101-point interpolation), `map_75`, and `map_per_class` {class name: AP .50:.95} for classes
    with ground truth. Targets may mark boxes `iscrowd` (crowd, difficult) to ignore them."""
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", class_metrics=True)
    metric.update(
        [{k: p[k] for k in ("boxes", "scores", "labels")} for p in predictions],
        [{k: t[k] for k in ("boxes", "labels", "iscrowd") if k in t} for t in targets],
    )
    result = metric.compute()
    per_class = {}
    for label, ap in zip(
        result["classes"].reshape(-1).tolist(), result["map_per_class"].reshape(-1).tolist(), strict=True
    ):
        if ap >= 0:  # -1: the class has no ground truth
            per_class[class_names[label - 1] if class_names else str(label)] = 100 * ap
    # AP of small (< 32^2 px), medium and large (> 96^2 px) objects: -1 (left out) when a size has no ground truth
    sizes = {k: 100 * float(result[k]) for k in ("map_small", "map_medium", "map_large") if float(result[k]) >= 0}
    return {**{k: 100 * float(result[k]) for k in ("map", "map_50", "map_75")}, **sizes, "map_per_class": per_class}


# ----------------------------------------------------------------------------------------------------------


def _splits(cfg: DictConfig, root: Path) -> tuple[DetectionDataset, DetectionDataset]:
    det = cfg.eval.detection
    train_set = build_detection_dataset(det.format, root, det.train_split)
    test_set = build_detection_dataset(det.format, root, det.test_split)
    if train_set.class_names != test_set.class_names:
        raise UserError(f"the {det.train_split} and {det.test_split} splits of {root} list different categories")
    for split, dataset in ((det.train_split, train_set), (det.test_split, test_set)):
        if dataset.num_boxes == 0:
            raise UserError(f"split {split!r} of {root} has no (non-difficult, non-crowd) boxes; pick another split")
    return train_set, test_set


def run(job: TransferJob) -> TaskResult:
    """Train Faster R-CNN on the pretrained backbone for (at most chunk_epochs of) eval.detection.epochs,
    resuming from job.state_path, then score the current model on the test split."""
    cfg, det, device = job.cfg, job.cfg.eval.detection, job.device
    check_settings(det)
    root = detection_root(cfg)
    train_set, test_set = _splits(cfg, root)
    torch.manual_seed(cfg.seed)  # the new layers' initialisation
    model = build_detector(job.backbone, len(train_set.class_names), det, *split_mean_std(cfg.data, cfg.views))
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = sgd([(trainable, det.lr)], det.momentum, det.weight_decay)
    workers = resolve_num_workers(det.num_workers, device.type, 1)
    trained = fine_tune(
        job,
        "detection",
        model,
        optimizer,
        lambda epoch: epoch_batches(train_set, det.batch_size, workers, device, cfg.seed * 1000 + epoch),
        lambda batch: detection_loss(model, *batch),
        detection_lr_factor(det),
        det.epochs,
        math.ceil(len(train_set) / det.batch_size),
        det.chunk_epochs,
    )
    predictions, truths = predict(model, test_set, det.batch_size, workers, device, job.progress)
    scores = detection_map(predictions, truths, train_set.class_names)
    per_class = scores.pop("map_per_class")
    return TaskResult(
        metrics=scores,
        params=OmegaConf.to_container(det, resolve=True),
        dataset={
            "format": det.format,
            "root": str(root),
            "train_split": det.train_split,
            "test_split": det.test_split,
            "train_size": len(train_set),
            "test_size": len(test_set),
            "train_boxes": train_set.num_boxes,
            "test_boxes": test_set.num_boxes,
            "classes": train_set.class_names,
        },
        complete=trained.complete,
        extra={
            "map_per_class": per_class,
            "train_loss_per_epoch": trained.history,
            "epochs_trained": trained.epochs_trained,
            "lr": optimizer.param_groups[0]["lr"],
        },
    )
