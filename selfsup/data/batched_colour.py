"""Colour augmentation of a whole batch of one view on its device: colour jitter, grayscale, Gaussian blur
and solarize with per-sample random parameters (tensors of shape [B], no Python loop over samples), then
normalisation; beside `batched_crops`, which crops the batch before.

Every batched op equals torchvision's functional op applied image by image with the same parameters
(tests/test_views.py checks this). One deliberate difference from torchvision's `ColorJitter`: the order
of brightness/contrast/saturation/hue is drawn once per batch call, not once per image; the factors
themselves are per sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from selfsup.data.views import ViewsConfig, views_config

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
"""Names of the colour-jitter ops; `params["order"]` indexes this tuple."""

_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, the weights torchvision's rgb_to_grayscale uses


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
    whose factors are all 0) is skipped without any compute. Runs in float32 with autocast disabled.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any] | DictConfig | ViewsConfig | None,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        super().__init__()
        self.cfg = views_config(cfg)
        # the views' own statistics, else the dataset's, checked by the views' declaration
        mean = self.cfg.mean if self.cfg.mean is not None else views_config({"mean": list(mean)}).mean
        std = self.cfg.std if self.cfg.std is not None else views_config({"std": list(std)}).std
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
        factors = c.jitter(view)
        if p["jitter_p"] > 0 and any(factors):
            on = u[0] < p["jitter_p"]
            # torchvision's ColorJitter ranges: [max(0, 1 - f), 1 + f] for the first three, [-h, h] for hue
            for row, (name, f) in enumerate(zip(JITTER_OPS[:3], factors[:3], strict=True), start=1):
                low, high = max(0.0, 1 - f), 1 + f
                params[name] = torch.where(on, low + (high - low) * u[row], 1.0)
            params["hue"] = torch.where(on, factors[3] * (2 * u[4] - 1), 0.0)
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
