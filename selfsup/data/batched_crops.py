"""Random resized crop and horizontal flip of a whole uint8 batch at once, on the batch's device.

This is the crop path of datasets held in memory as one uint8 array (CIFAR-10/100, SVHN, STL-10,
Fashion-MNIST, synthetic): the array is copied to the training device once, and a step's crops are drawn
there for the whole batch, so a GPU is not fed by per-image Python in loader workers.

A crop is a resize of a box of the image, which is linear in each axis: out = Ry @ image @ Rx^T with
per-sample resize matrices Ry [S, H] and Rx [S, W] that are zero outside the box. The batch is then two
batched matmuls, and a horizontal flip is Rx with its rows reversed. The matrices hold torchvision's
bilinear filter with antialiasing (a triangle filter widened by the downscale factor and normalised per
output pixel; plain bilinear when upscaling), so a crop equals torchvision's
`resized_crop(..., antialias=True)` of the same box, to rounding (tests/test_batched_crops.py). Boxes are
drawn as torchvision's RandomResizedCrop draws them: up to 10 tries of area and log aspect ratio, then its
central-crop fallback; here every try of every sample at once, from the device's global generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from selfsup.data.views import ViewsConfig, views_config

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
TRIES = 10  # RandomResizedCrop's tries before its central-crop fallback


def random_resized_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = RATIO,
    device: torch.device | str = "cpu",
) -> Tensor:
    """int64 [B, 4] boxes (top, left, h, w), one per sample, distributed as torchvision's
    RandomResizedCrop.get_params: the first of 10 tries of (area, aspect ratio) that fits, else the
    central crop with the aspect ratio clamped to `ratio`."""
    area = height * width
    u = torch.rand(4, batch, TRIES, device=device, dtype=torch.float64)
    target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + (log_high - log_low) * u[1])
    w = torch.sqrt(target_area * aspect).round().long()
    h = torch.sqrt(target_area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first try that fits (0 if none does)
    h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)
    top = (u[2].gather(1, first).squeeze(1) * (height - h + 1)).floor().long()
    left = (u[3].gather(1, first).squeeze(1) * (width - w + 1)).floor().long()
    # torchvision's fallback when no try fits: the whole image, cut to the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = int(round(height * ratio[1])), height
    else:
        fallback_w, fallback_h = width, height
    fallback = ((height - fallback_h) // 2, (width - fallback_w) // 2, fallback_h, fallback_w)
    found = fits.any(dim=1)
    # one where per coordinate with a Python scalar: a tensor of the fallback would be a host-to-device copy
    return torch.stack([torch.where(found, v, f) for v, f in zip((top, left, h, w), fallback, strict=True)], dim=1)


def resize_matrices(start: Tensor, length: Tensor, size_in: int, size_out: int) -> Tensor:
    """float32 [B, size_out, size_in]: row i holds the weights of output pixel i when the segment
    [start, start + length) of each sample's axis is resized to size_out, with torchvision's antialiased
    bilinear filter (zero outside the segment, so a crop never reads its neighbours)."""
    scale = (length.float() / size_out)[:, None, None]  # [B, 1, 1] input pixels per output pixel
    support = scale.clamp_min(1.0)
    out = torch.arange(size_out, device=start.device, dtype=torch.float32)[None, :, None]
    center = start.float()[:, None, None] + (out + 0.5) * scale
    pixels = torch.arange(size_in, device=start.device, dtype=torch.float32)[None, None, :]
    weights = (1 - ((pixels + 0.5 - center) / support).abs()).clamp_min(0)
    inside = (pixels >= start[:, None, None]) & (pixels < (start + length)[:, None, None])
    weights = weights * inside
    return weights / weights.sum(dim=2, keepdim=True)


def resized_crops(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Each box (top, left, h, w) of its image resized to size x size, mirrored where `flip` is True.

    images: [B, C, H, W] (uint8 or float). boxes int64 [B, 4] and flip bool [B]: one crop per image, float32
    [B, C, size, size]; or boxes [B, K, 4] and flip [B, K]: K crops per image in one pair of batched matmuls,
    float32 [B, K, C, size, size]. On the pixel scale of the input.
    """
    batch, _, height, width = images.shape
    flat = boxes.reshape(-1, 4)
    rows = resize_matrices(flat[:, 0], flat[:, 2], height, size)
    cols = resize_matrices(flat[:, 1], flat[:, 3], width, size)
    if flip is not None:
        cols = torch.where(flip.reshape(-1, 1, 1), cols.flip(1), cols)
    rows, cols = rows.view(batch, -1, size, height), cols.view(batch, -1, size, width)
    with torch.autocast(images.device.type, enabled=False):
        # K crops of one image contract with its pixels in one product, without a copy of the image per crop
        crops = torch.einsum("bksh,bchw,bktw->bkcst", rows, images.float(), cols)
    return crops if boxes.ndim == 3 else crops.squeeze(1)


def _to_uint8(x: Tensor) -> Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


class BatchCropFlip:
    """`CropFlip` for a whole batch on its device: uint8 [B, 3, H, W] -> uint8 [B, num, 3, S, S] (and,
    with local crops, uint8 [B, local_crops, 3, s, s]): the collated shape of CropFlip's output, so the
    rest of the data path is the same for both. Float images give float crops of their dtype."""

    def __init__(self, cfg: Mapping[str, Any] | DictConfig | ViewsConfig | None) -> None:
        self.cfg = views_config(cfg)

    def _crops(self, pixels: Tensor, count: int, size: int, scale: tuple[float, float]) -> Tensor:
        """uint8 [B, count, 3, size, size]: all `count` crops of every image drawn and resized at once."""
        batch, _, height, width = pixels.shape
        boxes = random_resized_boxes(batch * count, height, width, scale, device=pixels.device)
        flip = torch.rand(batch * count, device=pixels.device) < self.cfg.flip_p
        return resized_crops(pixels, boxes.view(batch, count, 4), size, flip.view(batch, count))

    def __call__(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if images.ndim != 4 or not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise ValueError(
                f"BatchCropFlip expects uint8 or float [B, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        c = self.cfg
        pixels = images.float()  # once for every crop of the batch

        def crops(count: int, size: int, scale: tuple[float, float]) -> Tensor:
            out = self._crops(pixels, count, size, scale)
            return _to_uint8(out) if images.dtype == torch.uint8 else out.to(images.dtype)

        views = crops(c.num, c.crop_size, c.crop_scale)
        if not c.local_crops:
            return views
        return views, crops(c.local_crops, c.local_crop_size, c.local_crop_scale)
