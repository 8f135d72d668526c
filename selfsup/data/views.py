"""Multi-view augmentation for SimCLR/BYOL-style pretraining, split where each part is cheapest.

* `CropFlip` runs per image in DataLoader workers on uint8: random resized crop and horizontal flip,
  drawn independently for each of the `num` views, plus `local_crops` small crops for multi-crop
  methods (SwAV, Caron et al. 2020, section 3.2; DINO). Datasets held in memory take its batched
  counterpart instead, `batched_crops.BatchCropFlip`, on the training device.
* `BatchAugment` runs on the training device on a whole uint8 batch of one view: colour jitter,
  grayscale, Gaussian blur and solarize with per-sample random parameters (tensors of shape [B], no
  Python loop over samples), then normalisation.

Every batched op equals torchvision's functional op applied image by image with the same parameters
(tests/test_views.py checks this). One deliberate difference from torchvision's `ColorJitter`: the order
of brightness/contrast/saturation/hue is drawn once per batch call, not once per image; the factors
themselves are per sample. Recipes: SimCLR (Chen et al. 2020, appendix A) and BYOL (Grill et al. 2020,
table 6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchvision.transforms import v2

from selfsup.data.sources import dataset_spec
from selfsup.errors import UserError
from selfsup.registry import close_matches_hint

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
"""Names of the colour-jitter ops; `params["order"]` indexes this tuple."""

_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, the weights torchvision's rgb_to_grayscale uses
_PER_VIEW = ("jitter_p", "grayscale_p", "blur_p", "solarize_p")


@dataclasses.dataclass(frozen=True)
class ViewsConfig:
    """The validated `views` config; per-view probabilities hold one entry per view."""

    num: int = 2
    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: tuple[float, ...] | float = 0.8
    grayscale_p: tuple[float, ...] | float = 0.2
    blur_p: tuple[float, ...] | float = 0.0
    solarize_p: tuple[float, ...] | float = 0.0
    # Multi-crop: small crops after the `num` global views. They use view 0's jitter and grayscale
    # probabilities, `local_blur_p`, and no solarize (the SwAV and DINO recipes).
    local_crops: int = 0
    local_crop_size: int = 16
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    local_blur_p: float = 0.0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @property
    def total(self) -> int:
        """Number of crops per image: global views then local crops."""
        return self.num + self.local_crops

    def sizes(self) -> list[int]:
        """Side of every crop, in view order."""
        return [self.crop_size] * self.num + [self.local_crop_size] * self.local_crops

    def probabilities(self, view: int) -> dict[str, float]:
        """The colour-op probabilities of crop `view` (global views 0..num-1, then local crops)."""
        if not 0 <= view < self.total:
            raise ValueError(f"view {view} out of range for {self.num} views + {self.local_crops} local crops")
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

    Scalar probabilities in `_PER_VIEW` are broadcast to one per view, so callers index them by view.
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
    known = [f.name for f in dataclasses.fields(ViewsConfig)]
    for key in raw:
        if key not in known:
            hint = close_matches_hint(f"views.{key}", [f"views.{k}" for k in known])
            raise UserError(f"unknown option views.{key}{hint} (known keys: {', '.join(known)})")
    values = {**dataclasses.asdict(ViewsConfig()), **raw}

    num = _integer(values["num"], "num")
    crop_size = _integer(values["crop_size"], "crop_size")
    scale = _scale(values["crop_scale"], "crop_scale")
    local_crops = values["local_crops"]
    if isinstance(local_crops, bool) or not isinstance(local_crops, int) or local_crops < 0:
        raise UserError(f"views.local_crops={local_crops!r} must be a non-negative integer")
    strength = _number(values["jitter_strength"], "jitter_strength")
    if not 0 <= strength <= 2.5:
        raise UserError(f"views.jitter_strength={strength} must be in [0, 2.5] (hue range 0.2*s <= 0.5)")
    per_view = {}
    for key in _PER_VIEW:
        value = values[key]
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) != num:
                raise UserError(
                    f"views.{key} has {len(value)} entries but views.num={num}: give one per view or a scalar"
                )
            per_view[key] = tuple(_probability(v, key) for v in value)
        else:
            per_view[key] = (_probability(value, key),) * num
    stats = {}
    for key in ("mean", "std"):
        stats[key] = None if values[key] is None else _floats(values[key], key, 3)
    if stats["std"] is not None and min(stats["std"]) <= 0:
        raise UserError(f"views.std={list(stats['std'])} must be positive")
    return ViewsConfig(
        num=num,
        crop_size=crop_size,
        crop_scale=scale,
        local_crops=local_crops,
        local_crop_size=_integer(values["local_crop_size"], "local_crop_size"),
        local_crop_scale=_scale(values["local_crop_scale"], "local_crop_scale"),
        local_blur_p=_probability(values["local_blur_p"], "local_blur_p"),
        flip_p=_probability(values["flip_p"], "flip_p"),
        jitter_strength=strength,
        mean=stats["mean"],
        std=stats["std"],
        **per_view,
    )


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"views.{key}={value!r} must be a number")
    return float(value)


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"views.{key}={value!r} must be a positive integer")
    return value


def _probability(value: Any, key: str) -> float:
    p = _number(value, key)
    if not 0 <= p <= 1:
        raise UserError(f"views.{key}={p} must be a probability in [0, 1]")
    return p


def _scale(value: Any, key: str) -> tuple[float, float]:
    low, high = _floats(value, key, 2)
    if not 0 < low <= high <= 1:
        raise UserError(f"views.{key}={[low, high]} must satisfy 0 < low <= high <= 1, e.g. [0.08, 1.0]")
    return low, high


def _floats(value: Any, key: str, length: int) -> tuple[float, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != length:
        raise UserError(f"views.{key}={value!r} must be a list of {length} numbers")
    return tuple(_number(v, key) for v in value)


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
        self.crop_size = _integer(crop_size, "crop_size")
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


def normalize(x: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Batched (x - mean) / std per channel; uint8 input is first scaled to [0, 1] (folded into one pass).

    x: [B, 3, H, W] uint8 or float in [0, 1]; returns float32.
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    scale = 1.0 / (std_t * 255.0) if x.dtype == torch.uint8 else 1.0 / std_t
    return torch.addcmul(-mean_t / std_t, x.to(torch.float32), scale)


# Batched functional ops. x: float [B, 3, H, W] in [0, 1]; parameters: tensors of shape [B] on x.device.
# Per-sample selection uses lerp with a 0/1 weight: exact at both ends, and on CPU about 3x cheaper than
# torch.where with a broadcast mask.


def _per_sample(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _select(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """new where mask (bool [B]) else old, exactly."""
    return torch.lerp(old, new, _per_sample(mask).to(old.dtype))


def _luma(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    return r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2]).unsqueeze(1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision adjust_brightness per sample: x * factor, clamped."""
    return x.mul(_per_sample(factor)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision adjust_contrast per sample: blend with the image's mean luma."""
    r, g, b = x.mean(dim=(2, 3)).unbind(1)  # mean luma = luma of the channel means
    mean = r.mul(_LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2])
    f = _per_sample(factor)
    return torch.addcmul(_per_sample(mean) * (1 - f), x, f).clamp_(0, 1)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """torchvision adjust_saturation per sample: blend with the per-pixel luma."""
    f = _per_sample(factor)
    return torch.addcmul(_luma(x) * (1 - f), x, f).clamp_(0, 1)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """torchvision adjust_hue per sample (shift in [-0.5, 0.5] turns); a zero shift returns x exactly.

    Rotates the HSV hue in closed form (value and chroma kept) instead of materialising HSV images:
    about 30 cheap passes over [B, H, W] rather than torchvision's stacks of 6 candidate images.
    """
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    chroma = maxc - minc
    red, green = maxc == r, maxc == g  # torchvision's tie order: red, then green, then blue
    # hue in sextants: (g - b)/C if red is the max, (b - r)/C + 2 if green, (r - g)/C + 4 if blue
    not_red = torch.where(green, (b - r).add_(chroma, alpha=2), (r - g).add_(chroma, alpha=4))
    sextant = torch.where(red, g - b, not_red).div_(chroma.clamp_min(1e-12))
    sextant = sextant.add_(shift.view(-1, 1, 1), alpha=6)
    sextant = sextant.sub_(torch.floor(sextant / 6).mul_(6))  # wrap to [0, 6]
    # back to RGB (the HSV "hue2rgb" triangle waves): channel = min + C * clamp(wave - 1, 0, 1)
    out = torch.empty_like(x)
    waves = (
        (sextant - 3).abs_().sub_(1),
        torch.minimum(sextant, (sextant - 5).abs_().sub_(1)),
        torch.minimum((sextant - 1).abs_().sub_(1), 6 - sextant),
    )
    for channel, wave in enumerate(waves):
        torch.addcmul(minc, chroma, wave.clamp_(0, 1), out=out[:, channel])
    return _select(shift != 0, out, x)


def grayscale(x: Tensor, mask: Tensor) -> Tensor:
    """torchvision rgb_to_grayscale (3 equal channels) for samples where mask is True."""
    return _select(mask, _luma(x).expand_as(x), x)


def blur_kernel_size(side: int) -> int:
    """10% of the image side, made odd, at least 3 (SimCLR/BYOL: 23 for 224)."""
    k = int(0.1 * side)
    return max(3, k + 1 - k % 2)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """torchvision gaussian_blur per sample (reflect padding), separable, one multiply-add per tap.

    sigma: [B]; samples with sigma <= 0 get a delta kernel, i.e. are returned exactly. Shifted
    multiply-adds with a per-sample weight beat grouped (depthwise) convolution with B * C groups by
    about 4x on CPU for the small kernels of 32-96 px images, and are plain elementwise kernels on GPU.
    """
    b, c, h, w = x.shape
    pad = kernel_size // 2
    taps = torch.arange(kernel_size, device=x.device, dtype=x.dtype) - pad
    gauss = torch.softmax(-0.5 * (taps / sigma.to(x.dtype).clamp_min(1e-3)[:, None]) ** 2, dim=1)
    kernel = torch.where(sigma[:, None] > 0, gauss, (taps == 0).to(x.dtype)).view(b, 1, 1, 1, kernel_size)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    rows = padded[..., :w] * kernel[..., 0]
    for j in range(1, kernel_size):
        rows.addcmul_(padded[..., j : j + w], kernel[..., j])
    out = rows[:, :, :h] * kernel[..., 0]
    for j in range(1, kernel_size):
        out.addcmul_(rows[:, :, j : j + h], kernel[..., j])
    return out


def solarize(x: Tensor, mask: Tensor) -> Tensor:
    """torchvision solarize with threshold 0.5 (x -> 1 - x where x >= 0.5) for samples where mask is True.

    On [0, 1] that is exactly min(x, 1 - x); 0.5 picks the same uint8 pixels as torchvision's 128.
    """
    return _select(mask, torch.minimum(x, 1 - x), x)


_JITTER_FNS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


class BatchAugment(nn.Module):
    """Colour jitter, grayscale, blur, solarize and normalisation of one view's uint8 batch, on its device.

    `forward` = `sample_params` then `apply`; both are public so the drawn parameters can be inspected.
    Randomness comes from the global RNG of the batch's device. An op whose probability is 0 (or jitter
    with strength 0) is skipped without any compute. Runs in float32 with autocast disabled.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | DictConfig | ViewsConfig | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.cfg = views_config(cfg)
        mean = self.cfg.mean if self.cfg.mean is not None else _floats(mean, "mean", 3)
        std = self.cfg.std if self.cfg.std is not None else _floats(std, "std", 3)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.cfg).items())

    def sample_params(self, batch: int, view: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Draw per-sample parameters for one view; keys are present only for ops that can fire.

        brightness/contrast/saturation: [B] factors (1 = unchanged), hue: [B] shift (0 = unchanged),
        order: CPU int64 [4] permutation of JITTER_OPS; grayscale/solarize: bool [B];
        sigma: [B] blur sigma (0 = not blurred).
        """
        c = self.cfg
        p = c.probabilities(view)
        u = torch.rand(9, batch, device=device)  # one draw for every random number of the batch
        params: dict[str, Tensor] = {}
        s = c.jitter_strength
        if p["jitter_p"] > 0 and s > 0:
            on = u[0] < p["jitter_p"]
            for row, name in enumerate(JITTER_OPS[:3], start=1):
                low, high = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
                params[name] = torch.where(on, low + (high - low) * u[row], 1.0)
            params["hue"] = torch.where(on, 0.2 * s * (2 * u[4] - 1), 0.0)
            params["order"] = torch.randperm(len(JITTER_OPS))
        if p["grayscale_p"] > 0:
            params["grayscale"] = u[5] < p["grayscale_p"]
        if p["blur_p"] > 0:
            params["sigma"] = torch.where(u[6] < p["blur_p"], 0.1 + 1.9 * u[7], 0.0)
        if p["solarize_p"] > 0:
            params["solarize"] = u[8] < p["solarize_p"]
        return params

    def apply(self, x: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Apply drawn parameters to float x in [0, 1] [B, 3, H, W]; returns [0, 1] (not normalised)."""
        if "order" in params:
            for i in params["order"].tolist():
                x = _JITTER_FNS[i](x, params[JITTER_OPS[i]])
        if "grayscale" in params:
            x = grayscale(x, params["grayscale"])
        if "sigma" in params:
            x = gaussian_blur(x, params["sigma"], blur_kernel_size(min(x.shape[-2:])))
        if "solarize" in params:
            x = solarize(x, params["solarize"])
        return x

    def forward(self, x: Tensor, view: int) -> Tensor:
        """uint8 [B, 3, S, S] (0-255) or float [B, 3, S, S] (0-1) -> normalised float32 [B, 3, S, S] for crop
        `view` (which selects its probabilities)."""
        if x.ndim != 4 or not (x.dtype == torch.uint8 or x.is_floating_point()):
            raise ValueError(f"BatchAugment expects uint8 or float [B, 3, H, W], got {x.dtype} {tuple(x.shape)}")
        params = self.sample_params(x.shape[0], view, x.device)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        if not params:
            return normalize(x, mean, std)
        with torch.autocast(x.device.type, enabled=False):
            unit = x.to(torch.float32).div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)
            return normalize(self.apply(unit, params), mean, std)
