"""`shapes`: procedural images whose class is a shape and nothing else, to show that a method learns.

Each image is one disk, square, triangle or plus of random size, position and rotation, with pixel noise.
Every class covers the same area range, so raw pixels and random networks barely tell the classes apart
(kNN 26-40% with chance at 25%), where a short run of any method family reaches 40-70%. Foreground and background
levels are fixed on purpose: a colour drawn per image is an identity cue that colour jitter does not erase
in a short run, so a method matches views by colour and learns nothing about shape (seen while
calibrating tests/test_learning.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from selfsup.data.sources import DatasetSpec, ImageDataset, register
from selfsup.errors import UserError

# Signed fields in object coordinates, positive inside; their zero sets have the areas in _AREAS.
_FIELDS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disk": lambda x, y: 1 - np.hypot(x, y),
    "square": lambda x, y: 1 - np.maximum(np.abs(x), np.abs(y)),
    "triangle": lambda x, y: np.minimum(0.5 - y, 0.55 * (y + 1) - np.abs(x)),
    "plus": lambda x, y: np.maximum(
        np.minimum(0.33 - np.abs(x), 1 - np.abs(y)), np.minimum(0.33 - np.abs(y), 1 - np.abs(x))
    ),
}
_AREAS = {"disk": np.pi, "square": 4.0, "triangle": 1.1 * 1.5**2 / 2, "plus": 2 * 0.66 * 2 - 0.66**2}
SHAPE_CLASSES = tuple(_FIELDS)
SHAPES_SIZES = {"train": 2000, "test": 1000}
FOREGROUND, BACKGROUND = 0.8, 0.2


def make_shapes(
    n: int,
    seed: int,
    split_key: int = 0,
    side: int = 24,
    noise: float = 0.1,
    area: tuple[float, float] = (0.08, 0.25),
    position: float = 0.6,
) -> ImageDataset:
    """`n` class-balanced grey images of SHAPE_CLASSES, `side` px: each shape covers a uniform random
    fraction `area` of the image, is centred uniformly within +-`position` of the half-width and rotated uniformly;
    i.i.d. Gaussian pixel noise of std `noise`. A pure function of its arguments."""
    rng = np.random.default_rng([seed, split_key])
    labels = rng.permutation(np.arange(n) % len(SHAPE_CLASSES))
    shape = (n, 1, 1)
    covered = rng.uniform(*area, shape) * 4  # in units of the [-1, 1]^2 image
    scale = np.sqrt(covered / np.array([_AREAS[c] for c in SHAPE_CLASSES])[labels][:, None, None])
    centre = rng.uniform(-position, position, (2, *shape))
    angle = rng.uniform(0, 2 * np.pi, shape)
    grid = (np.arange(side) + 0.5) / side * 2 - 1
    dx, dy = grid[None, None, :] - centre[0], grid[None, :, None] - centre[1]
    x = (np.cos(angle) * dx + np.sin(angle) * dy) / scale
    y = (np.cos(angle) * dy - np.sin(angle) * dx) / scale
    field = np.empty((n, side, side))
    for k, inside in enumerate(_FIELDS.values()):
        m = labels == k
        field[m] = inside(x[m], y[m]) * scale[m]  # back to image units: about a distance near the edge
    mask = np.clip(0.5 + field / (2 / side), 0, 1)  # anti-aliased over one pixel
    image = BACKGROUND + (FOREGROUND - BACKGROUND) * mask[:, None] + rng.normal(0, noise, (n, 3, side, side))
    return ImageDataset(labels, SHAPE_CLASSES, images=np.round(np.clip(image, 0, 1) * 255).astype(np.uint8))


# mean/std measured on the default train split (seed 0).
@register(DatasetSpec("shapes", ("train", "test"), len(SHAPE_CLASSES), (0.3,) * 3, (0.23,) * 3, 24))
def _shapes(root: Path, split: str, download: bool, *, size: int | None = None, seed: int = 0) -> ImageDataset:
    """Generated in memory (root unused); each split is an independent stream, sized by SHAPES_SIZES."""
    n = SHAPES_SIZES[split] if size is None else size
    if n < 1:
        raise UserError(f"shapes dataset size must be >= 1, got {n}")
    return make_shapes(n, seed, split_key=list(SHAPES_SIZES).index(split))
