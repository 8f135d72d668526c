"""`synthetic`: procedural 32x32 shapes and textures, for tests and demos that must learn something in
seconds; nothing to read from disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from selfsup.data.sources import DatasetSpec, ImageDataset, register
from selfsup.errors import UserError

SYNTHETIC_SIZES = {"train": 2000, "test": 500}
# One foreground colour per class; jittered per image, so colour is a cue but shape carries the class too.
_PALETTE = np.array(
    [
        [0.9, 0.2, 0.2],
        [0.2, 0.8, 0.2],
        [0.2, 0.3, 0.9],
        [0.9, 0.8, 0.2],
        [0.8, 0.2, 0.8],
        [0.2, 0.8, 0.8],
        [0.95, 0.55, 0.1],
        [0.6, 0.4, 0.9],
        [0.9, 0.9, 0.9],
        [0.5, 0.7, 0.3],
    ],
    dtype=np.float32,
)


def _wave(t: np.ndarray, freq: np.ndarray, phase: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * freq * t + phase) / (2 * np.pi * freq)


def _bar_cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.abs(a), np.abs(b)
    return np.maximum(np.minimum(0.18 - a, 0.75 - b), np.minimum(0.18 - b, 0.75 - a))


# Each pattern maps object coordinates (x, y, r, frequency, phase) to a field that is positive inside the
# shape and roughly a distance near its edge; all are symmetric under horizontal flips, so flip augmentation
# never turns one class into another.
_PATTERNS: dict[str, Callable[..., np.ndarray]] = {
    "hstripes": lambda x, y, r, f, p: _wave(y, f, p),
    "vstripes": lambda x, y, r, f, p: _wave(x, f, p),
    "checker": lambda x, y, r, f, p: _wave(x, f, p) * np.sin(2 * np.pi * f * y + p),
    "rings": lambda x, y, r, f, p: _wave(r, f, p),
    "disk": lambda x, y, r, f, p: 0.6 - r,
    "square": lambda x, y, r, f, p: 0.55 - np.maximum(np.abs(x), np.abs(y)),
    "plus": lambda x, y, r, f, p: _bar_cross(x, y),
    "xcross": lambda x, y, r, f, p: _bar_cross((x + y) / np.sqrt(2), (x - y) / np.sqrt(2)),
    "triangle": lambda x, y, r, f, p: np.minimum(0.5 - y, 0.55 * (y + 0.65) - np.abs(x)),
    "annulus": lambda x, y, r, f, p: 0.14 - np.abs(r - 0.5),
}
SYNTHETIC_CLASSES = tuple(_PATTERNS)


def make_synthetic(n: int, seed: int, split_key: int = 0, side: int = 32) -> ImageDataset:
    """`n` class-balanced images of the 10 SYNTHETIC_CLASSES with random position, scale, phase, colours and
    noise; a pure function of (n, seed, split_key, side), vectorised over images (one loop over classes)."""
    rng = np.random.default_rng([seed, split_key])
    labels = rng.permutation(np.arange(n) % len(SYNTHETIC_CLASSES))
    grid = (np.arange(side, dtype=np.float32) + 0.5) / side * 2 - 1
    shape = (n, 1, 1)
    scale = rng.uniform(0.55, 0.9, shape).astype(np.float32)
    x = (grid[None, None, :] - rng.uniform(-0.3, 0.3, shape).astype(np.float32)) / scale
    y = (grid[None, :, None] - rng.uniform(-0.3, 0.3, shape).astype(np.float32)) / scale
    x, y = np.broadcast_arrays(x, y)
    r = np.hypot(x, y)
    freq = rng.uniform(1.2, 2.0, shape).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, shape).astype(np.float32)
    field = np.empty((n, side, side), dtype=np.float32)
    for k, pattern in enumerate(_PATTERNS.values()):
        m = labels == k
        field[m] = pattern(x[m], y[m], r[m], freq[m], phase[m])
    pixel = 2.0 / side / scale  # one pixel in object coordinates: anti-aliased edges
    mask = np.clip(0.5 + field / pixel, 0, 1)[:, None]
    fg = np.clip(_PALETTE[labels] + rng.normal(0, 0.1, (n, 3)), 0, 1).astype(np.float32)[:, :, None, None]
    bg = rng.uniform(0.0, 0.4, (n, 3, 1, 1)).astype(np.float32)
    image = bg + (fg - bg) * mask + rng.normal(0, 0.05, (n, 3, side, side)).astype(np.float32)
    images = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    return ImageDataset(labels, SYNTHETIC_CLASSES, images=images)


# mean/std measured on the default train split (seed 0).
@register(DatasetSpec("synthetic", ("train", "test"), 10, (0.31, 0.30, 0.27), (0.25, 0.23, 0.22), 32))
def _synthetic(root: Path, split: str, download: bool, *, size: int | None = None, seed: int = 0) -> ImageDataset:
    """Generated in memory (root unused); each split is an independent stream, sized by SYNTHETIC_SIZES."""
    n = SYNTHETIC_SIZES[split] if size is None else size
    if n < 1:
        raise UserError(f"synthetic dataset size must be >= 1, got {n}")
    return make_synthetic(n, seed, split_key=list(SYNTHETIC_SIZES).index(split))
