"""SVHN: MATLAB files root/{train,test,extra}_32x32.mat; X is H x W x C x N, label 10 means digit 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from selfsup.data.images import first_line
from selfsup.data.matfile import read_mat
from selfsup.data.sources import DatasetSpec, ImageDataset, check_labels, fetch_hint, read_or_download, register
from selfsup.errors import UserError


def _read_svhn(path: Path) -> ImageDataset:
    hint = fetch_hint(path.name)
    if not path.is_file():
        raise UserError(f"missing file: expected SVHN {path}; {hint}")
    try:
        mat = read_mat(path)
    except Exception as err:  # scipy raises many types (MatReadError, ValueError, ...) on corrupt files
        raise UserError(f"malformed SVHN file {path} ({first_line(err)}); {hint}") from err
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        shape = getattr(x, "shape", None)
        raise UserError(f"malformed SVHN file {path}: expected 'X' uint8 [32, 32, 3, N], got {shape}; {hint}")
    if y is None:
        raise UserError(f"malformed SVHN file {path}: no 'y' labels; {hint}")
    labels = check_labels(y, x.shape[3], 1, 10, path, hint) % 10
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))
    return ImageDataset(labels, [str(d) for d in range(10)], images=images)


@register(
    DatasetSpec(
        "svhn",
        ("train", "test", "extra"),
        10,
        mean=(0.4377, 0.4438, 0.4728),
        std=(0.1980, 0.2010, 0.1970),
        image_size=32,
    )
)
def _svhn(root: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import SVHN

    return read_or_download(
        lambda: _read_svhn(root / f"{split}_32x32.mat"),
        lambda: SVHN(str(root), split=split, download=True),
        download,
        root,
    )
