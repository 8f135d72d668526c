"""Multi-view augmentation for SimCLR/BYOL-style pretraining, split where each part is cheapest.

* `CropFlip` runs per image in DataLoader workers on uint8: random resized crop and horizontal flip,
  drawn independently for each of the `num` views, plus `local_crops` small crops for multi-crop
  methods (SwAV, Caron et al. 2020, section 3.2; DINO). Datasets held in memory take its batched
  counterpart instead, `batched_crops.BatchCropFlip`, on the training device.
* `batched_colour.BatchAugment` runs on the training device on a whole batch of one view: colour jitter,
  grayscale, Gaussian blur and solarize with per-sample random parameters, then normalisation.

This module holds the settings of both (`ViewsConfig`, checked by `views_config`), the per-image crops and
the evaluation transform. Recipes: SimCLR (Chen et al. 2020, appendix A) and BYOL (Grill et al. 2020,
table 6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torchvision.transforms import v2

from selfsup.data.sources import dataset_spec
from selfsup.errors import UserError
from selfsup.settings import (
    NON_NEGATIVE,
    NUMBER,
    POSITIVE,
    PROBABILITY,
    SCALE_RANGE,
    Count,
    PositiveInt,
    Probability,
    Rule,
    check_section,
    check_value,
    declaration,
    is_int,
    is_number,
    list_of,
    optional,
    scalar_or_list,
)

MIN_CROP = 8
# A crop side: below 8 px (the smallest any preset or test takes) a crop is a few pixels of one colour, with
# nothing left for crops, blur or a backbone's downsampling to work on, yet it trained without a word.
CROP_SIDE = Rule(
    lambda v: is_int(v) and v >= MIN_CROP, f"an integer >= {MIN_CROP} (px; smaller crops hold nothing to learn)"
)
CropSide = Annotated[int, CROP_SIDE]
_PER_VIEW = ("jitter_p", "grayscale_p", "blur_p", "solarize_p")
PerView = Annotated["tuple[float, ...] | float", scalar_or_list(PROBABILITY)]
# Hue jitter is 0.2 x strength and torchvision's hue factor is at most 0.5.
JITTER_STRENGTH = Rule(lambda v: is_number(v) and 0 <= v <= 2.5, "a number in [0, 2.5] (hue 0.2 x strength <= 0.5)")
# The four factors as torchvision's ColorJitter takes them, for recipes off SimCLR's ratios (BYOL's saturation).
# torchvision's ColorJitter refuses a hue factor above 0.5.
JitterFactors = tuple[float, float, float, float]
VIEW_FACTORS = Rule(
    lambda v: list_of(NON_NEGATIVE, 4).ok(v) and v[3] <= 0.5,
    "a list [brightness, contrast, saturation, hue] of numbers >= 0 with hue <= 0.5",
)
JITTER_FACTORS = Rule(
    lambda v: v is None or VIEW_FACTORS.ok(v) or list_of(VIEW_FACTORS).ok(v),
    f"null (from jitter_strength), {VIEW_FACTORS.allowed}, or one such list per view",
)


@dataclasses.dataclass(frozen=True)
class ViewsConfig:
    """The validated `views` config; per-view probabilities hold one entry per view."""

    num: PositiveInt = 2
    crop_size: CropSide = 32
    crop_scale: Annotated[tuple[float, float], SCALE_RANGE] = (0.08, 1.0)
    flip_p: Probability = 0.5
    jitter_strength: Annotated[float, JITTER_STRENGTH] = 0.5
    # One list for every view, or one per view (held per view once read); when set, jitter_strength is unused.
    jitter_factors: Annotated[tuple[JitterFactors, ...] | None, JITTER_FACTORS] = None
    jitter_p: PerView = 0.8
    grayscale_p: PerView = 0.2
    blur_p: PerView = 0.0
    solarize_p: PerView = 0.0
    # Multi-crop: small crops after the `num` global views. They use view 0's jitter factors and its jitter and
    # grayscale probabilities, `local_blur_p`, and no solarize (the SwAV and DINO recipes).
    local_crops: Count = 0
    local_crop_size: CropSide = 16
    local_crop_scale: Annotated[tuple[float, float], SCALE_RANGE] = (0.05, 0.4)
    local_blur_p: Probability = 0.0
    mean: Annotated[tuple[float, float, float] | None, optional(list_of(NUMBER, 3))] = None
    std: Annotated[tuple[float, float, float] | None, optional(list_of(POSITIVE, 3))] = None

    @property
    def total(self) -> int:
        """Number of crops per image: global views then local crops."""
        return self.num + self.local_crops

    def sizes(self) -> list[int]:
        """Side of every crop, in view order."""
        return [self.crop_size] * self.num + [self.local_crop_size] * self.local_crops

    def _check_view(self, view: int) -> None:
        if not 0 <= view < self.total:
            raise ValueError(f"view {view} out of range for {self.num} views + {self.local_crops} local crops")

    def jitter(self, view: int) -> JitterFactors:
        """The colour-jitter factors (brightness, contrast, saturation, hue) of crop `view`: jitter_factors,
        else SimCLR's (0.8, 0.8, 0.8, 0.2) x jitter_strength; local crops take view 0's, as for jitter_p."""
        self._check_view(view)
        if self.jitter_factors is None:
            s = self.jitter_strength
            return (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
        return self.jitter_factors[view if view < self.num else 0]

    def probabilities(self, view: int) -> dict[str, float]:
        """The colour-op probabilities of crop `view` (global views 0..num-1, then local crops)."""
        self._check_view(view)
        if view < self.num:
            return {key: getattr(self, key)[view] for key in _PER_VIEW}
        return {
            "jitter_p": self.jitter_p[0],
            "grayscale_p": self.grayscale_p[0],
            "blur_p": self.local_blur_p,
            "solarize_p": 0.0,
        }


def views_config(cfg: Mapping[str, Any] | DictConfig | ViewsConfig | None) -> ViewsConfig:
    """Read and check a `views` config (OmegaConf node, dict or dataclass); missing keys take defaults.

    Scalar probabilities in `_PER_VIEW`, and one list of jitter factors, are broadcast to one per view, so
    callers index them by view.
    """
    if cfg is None:
        raw: dict[str, Any] = {}
    elif isinstance(cfg, DictConfig):
        raw = dict(OmegaConf.to_container(cfg, resolve=True))
    elif dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        raw = dataclasses.asdict(cfg)
    elif isinstance(cfg, Mapping):
        raw = dict(cfg)
    else:
        raise UserError(f"views config must be a mapping of options, got {type(cfg).__name__}")
    check_section("views", raw, declaration(ViewsConfig))
    values = {**dataclasses.asdict(ViewsConfig()), **raw}
    num = values["num"]
    per_view: dict[str, Any] = {}
    for key in _PER_VIEW:
        value = values[key]
        if isinstance(value, Sequence) and not isinstance(value, str):
            per_view[key] = tuple(float(v) for v in _one_per_view(key, value, num, "a scalar"))
        else:
            per_view[key] = (float(value),) * num
    factors = values["jitter_factors"]
    if factors is not None:
        lists = (
            [factors] * num if VIEW_FACTORS.ok(factors) else _one_per_view("jitter_factors", factors, num, "one list")
        )
        per_view["jitter_factors"] = tuple(tuple(float(f) for f in entry) for entry in lists)
    pairs = {key: tuple(float(v) for v in values[key]) for key in ("crop_scale", "local_crop_scale")}
    stats = {key: None if values[key] is None else tuple(float(v) for v in values[key]) for key in ("mean", "std")}
    scalars = {key: values[key] for key in ("crop_size", "local_crops", "local_crop_size")}
    probabilities = {key: float(values[key]) for key in ("flip_p", "local_blur_p", "jitter_strength")}
    return ViewsConfig(num=num, **scalars, **pairs, **probabilities, **stats, **per_view)


def _one_per_view(key: str, value: Sequence[Any], num: int, single: str) -> Sequence[Any]:
    """A per-view list, refused in one line unless it has `num` entries (`single`: the form for all views)."""
    if len(value) != num:
        raise UserError(f"views.{key} has {len(value)} entries but views.num={num}: give one per view or {single}")
    return value


class CropFlip:
    """Per-image random resized crop + horizontal flip for every view; the DataLoader workers' transform.

    Works on uint8 so workers move 4x fewer bytes than float; picklable for worker processes.
    """

    def __init__(self, cfg: Mapping[str, Any] | DictConfig | ViewsConfig | None) -> None:
        c = views_config(cfg)
        self.num = c.num
        self.local_crops = c.local_crops
        self.crop = v2.RandomResizedCrop(c.crop_size, scale=c.crop_scale, antialias=True)
        self.local_crop = v2.RandomResizedCrop(c.local_crop_size, scale=c.local_crop_scale, antialias=True)
        self.flip = v2.RandomHorizontalFlip(c.flip_p)

    def __call__(self, image: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """uint8 [3, H, W] -> uint8 [num, 3, S, S], each view with its own crop and flip; with local
        crops, a pair (that tensor, uint8 [local_crops, 3, s, s])."""
        if image.dtype != torch.uint8 or image.ndim != 3:
            got = f"{image.dtype} {tuple(image.shape)}"
            raise ValueError(f"CropFlip expects a uint8 [3, H, W] image, got {got}")
        views = torch.stack([self.flip(self.crop(image)) for _ in range(self.num)])
        if not self.local_crops:
            return views
        return views, torch.stack([self.flip(self.local_crop(image)) for _ in range(self.local_crops)])


def crops_of_batch(batch: Tensor | Sequence[Tensor], device: torch.device | str | None = None) -> list[Tensor]:
    """The collated `CropFlip` output as one uint8 [B, 3, S, S] tensor per crop, in view order, moved to
    `device` one group at a time (non-blocking)."""
    groups = [batch] if isinstance(batch, Tensor) else list(batch)
    if device is not None:
        groups = [group.to(device, non_blocking=True) for group in groups]
    return [group[:, v] for group in groups for v in range(group.shape[1])]


class EvalTransform:
    """Deterministic resize + center crop to `crop_size` for feature extraction (picklable)."""

    def __init__(self, crop_size: int) -> None:
        check_value("crop_size", crop_size, CROP_SIDE)
        self.crop_size = crop_size
        # ImageNet convention (resize 256, crop 224) for large crops; small images are only resized
        resize = round(crop_size * 8 / 7) if crop_size >= 96 else crop_size
        self.resize = v2.Resize(resize, antialias=True)
        self.crop = v2.CenterCrop(crop_size)

    def __call__(self, image: Tensor) -> Tensor:
        """uint8 [3, H, W] -> uint8 [3, S, S]; images already S x S are returned unchanged."""
        if image.shape[-2:] == (self.crop_size, self.crop_size):
            return image
        return self.crop(self.resize(image))


def eval_transform(crop_size: int) -> EvalTransform:
    """The evaluation-time counterpart of `CropFlip`: uint8 [3, H, W] -> uint8 [3, S, S]."""
    return EvalTransform(crop_size)


def split_mean_std(data_cfg: DictConfig, views_cfg: DictConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation used for training views and evaluation alike (views.mean/std override the dataset's)."""
    spec = dataset_spec(data_cfg.name)
    mean = tuple(views_cfg.mean) if views_cfg.mean is not None else tuple(spec.mean)
    std = tuple(views_cfg.std) if views_cfg.std is not None else tuple(spec.std)
    return mean, std
