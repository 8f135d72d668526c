"""Fashion-MNIST: idx files root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from selfsup.data.class_lists import class_list
from selfsup.data.sources import DatasetSpec, ImageDataset, check_labels, fetch_hint, read_or_download, register
from selfsup.errors import UserError


def _read_idx(path: Path, item_shape: tuple[int, ...], hint: str) -> np.ndarray:
    """An idx file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian int32 dims, then the data)."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            break
    else:
        raise UserError(f"missing file: expected {path} (or {path.name}.gz); {hint}")
    try:
        data = candidate.read_bytes()
        data = gzip.decompress(data) if candidate.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"malformed gzip file {candidate} ({err}); {hint}") from err
    ndim = 1 + len(item_shape)
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise UserError(f"malformed idx file {candidate}: expected a uint8 idx header with {ndim} dims; {hint}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if dims[1:] != item_shape or len(data) != header + int(np.prod(dims)):
        raise UserError(
            f"malformed idx file {candidate}: dims {dims} and {len(data)} bytes, expected items "
            f"of shape {item_shape}; {hint}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@register(DatasetSpec("fashion_mnist", ("train", "test"), 10, (0.2860,) * 3, (0.3530,) * 3, 28))
def _fashion_mnist(root: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import FashionMNIST

    def read() -> ImageDataset:
        raw = root / "FashionMNIST" / "raw"
        prefix = "train" if split == "train" else "t10k"
        hint = fetch_hint("FashionMNIST/raw/")
        images = _read_idx(raw / f"{prefix}-images-idx3-ubyte", (28, 28), hint)
        labels_path = raw / f"{prefix}-labels-idx1-ubyte"
        labels = check_labels(_read_idx(labels_path, (), hint), len(images), 0, 9, labels_path, hint)
        gray3 = np.repeat(images[:, None], 3, axis=1)
        return ImageDataset(labels, class_list("fashion_mnist"), images=gray3)

    return read_or_download(
        read, lambda: FashionMNIST(str(root), train=split == "train", download=True), download, root
    )
