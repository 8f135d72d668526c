"""STL-10: binary files root/stl10_binary/<part>_X.bin (3x96x96 column-major per image) and <part>_y.bin
(labels 1..10); `train+unlabeled` joins two parts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selfsup.data.class_lists import class_list
from selfsup.data.sources import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetSpec,
    ImageDataset,
    check_labels,
    fetch_hint,
    read_or_download,
    register,
)
from selfsup.errors import UserError

_STL10_PARTS = {
    "train": ["train"],
    "test": ["test"],
    "unlabeled": ["unlabeled"],
    "train+unlabeled": ["train", "unlabeled"],
}
_STL10_RECORD = 3 * 96 * 96


def _read_stl10(folder: Path, parts: Sequence[str]) -> ImageDataset:
    hint = fetch_hint("stl10_binary/")
    counts = []
    for part in parts:
        path = folder / f"{part}_X.bin"
        if not path.is_file():
            raise UserError(f"missing file: expected STL-10 images {path}; {hint}")
        size = path.stat().st_size
        if size == 0 or size % _STL10_RECORD:
            raise UserError(
                f"malformed STL-10 file {path}: {size} bytes, not a positive multiple of {_STL10_RECORD}; {hint}"
            )
        counts.append(size // _STL10_RECORD)
    images = np.empty((sum(counts), 3, 96, 96), dtype=np.uint8)
    labels = np.full(sum(counts), -1, dtype=np.int64)
    start = 0
    for part, count in zip(parts, counts, strict=True):
        raw = np.memmap(folder / f"{part}_X.bin", dtype=np.uint8, mode="r", shape=(count, 3, 96, 96))
        images[start : start + count] = raw.transpose(0, 1, 3, 2)
        if part != "unlabeled":
            path = folder / f"{part}_y.bin"
            if not path.is_file():
                raise UserError(f"missing file: expected STL-10 labels {path}; {hint}")
            labels[start : start + count] = (
                check_labels(np.fromfile(path, dtype=np.uint8), count, 1, 10, path, hint) - 1
            )
        start += count
    return ImageDataset(labels, class_list("stl10"), images=images)


@register(
    DatasetSpec("stl10", tuple(_STL10_PARTS), 10, IMAGENET_MEAN, IMAGENET_STD, 96, pretrain_split="train+unlabeled")
)
def _stl10(root: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import STL10

    return read_or_download(
        lambda: _read_stl10(root / "stl10_binary", _STL10_PARTS[split]),
        lambda: STL10(str(root), split=split, download=True),
        download,
        root,
    )
