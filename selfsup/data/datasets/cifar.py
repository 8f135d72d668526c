"""CIFAR-10 / CIFAR-100: the python pickle batches (cifar-10-batches-py/, cifar-100-python/), read without
running code from them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.data.class_lists import class_list
from selfsup.data.safe_pickle import RefusedGlobal, load_arrays_pickle
from selfsup.data.sources import DatasetSpec, ImageDataset, check_labels, fetch_hint, read_or_download, register
from selfsup.errors import UserError


def _unpickle(path: Path, hint: str) -> Any:
    """A CIFAR batch's contents, read without running code from the file (see safe_pickle)."""
    if not path.is_file():
        raise UserError(f"missing file: expected a python pickle batch at {path}; {hint}")
    try:
        with path.open("rb") as f:
            return load_arrays_pickle(f)
    except RefusedGlobal as err:
        raise UserError(
            f"{path} is not a CIFAR batch: it asks to run {err.name}, which a CIFAR batch never does; "
            f"delete it and get the dataset again ({hint})"
        ) from None
    except Exception as err:  # a corrupt pickle can fail in almost any way
        raise UserError(f"malformed pickle batch {path} ({type(err).__name__}: {err}); {hint}") from err


def _read_cifar(folder: Path, batches: Sequence[str], label_key: str, classes: Sequence[str]) -> ImageDataset:
    hint = fetch_hint(folder.name + "/")
    images, labels = [], []
    for batch in batches:
        path = folder / batch
        entry = _unpickle(path, hint)
        data = entry.get("data") if isinstance(entry, dict) else None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
            raise UserError(f"malformed CIFAR batch {path}: expected a dict with 'data' uint8 [N, 3072]; {hint}")
        if len(data) == 0:
            raise UserError(f"CIFAR batch {path} is empty (0 images); {hint}")
        if label_key not in entry:
            raise UserError(f"malformed CIFAR batch {path}: no {label_key!r} key; {hint}")
        labels.append(check_labels(entry[label_key], len(data), 0, len(classes) - 1, path, hint))
        images.append(data.reshape(-1, 3, 32, 32))
    return ImageDataset(np.concatenate(labels), classes, images=np.ascontiguousarray(np.concatenate(images)))


_CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


@register(
    DatasetSpec(
        "cifar10", ("train", "test"), 10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), image_size=32
    )
)
def _cifar10(root: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR10

    return read_or_download(
        lambda: _read_cifar(root / "cifar-10-batches-py", _CIFAR10_BATCHES[split], "labels", class_list("cifar10")),
        lambda: CIFAR10(str(root), train=split == "train", download=True),
        download,
        root,
    )


@register(
    DatasetSpec(
        "cifar100", ("train", "test"), 100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762), image_size=32
    )
)
def _cifar100(root: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR100

    return read_or_download(
        lambda: _read_cifar(root / "cifar-100-python", [split], "fine_labels", class_list("cifar100")),
        lambda: CIFAR100(str(root), train=split == "train", download=True),
        download,
        root,
    )
