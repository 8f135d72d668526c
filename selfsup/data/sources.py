"""Dataset registry: a name gives a builder and a DatasetSpec; the builders, one module per format family in
`selfsup.data.datasets`, read the native on-disk formats with the shared helpers below.

Readers check structure (keys, shapes, dtypes, label ranges, record sizes) rather than the official
checksums, so partial or re-packed copies load; anything unexpected is a one-line UserError naming the path
that was looked at and how to get the data. Downloads happen only with download=True, through torchvision's
own dataset classes, after which the same structural reader runs.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from selfsup.data.images import UndecodableImage, read_image, shown
from selfsup.errors import UserError
from selfsup.registry import Registry
from selfsup.settings import AUTO_TRUE_FALSE, BOOL, POSITIVE_INT, TEXT, Declaration, one_of, optional

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
BAD_IMAGES = ("fail", "skip")  # what an image-folder dataset does with a file it cannot decode
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDataset(Dataset):
    """Images as uint8 [3, H, W] tensors with int labels (-1 = unlabeled), held in memory or read from files.

    In-memory formats keep one contiguous NCHW uint8 array, so an item is a slice, not a decode. File formats
    keep their paths as one numpy bytes array relative to `root` rather than a list of str, because DataLoader
    workers touching Python objects copy the pages that hold them (pytorch/pytorch#13246).
    """

    def __init__(
        self,
        labels: np.ndarray,
        classes: Sequence[str],
        *,
        images: np.ndarray | None = None,
        root: str | Path | None = None,
        files: Sequence[str] = (),
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = list(classes)
        self.images = images
        self.root = None if root is None else str(root)
        self.files = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        count = len(images) if images is not None else len(self.files)
        if (images is None) == (root is None) or count != len(self.labels):
            raise ValueError("ImageDataset needs either images or root+files, one label per image")
        if images is not None and (images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != 3):
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {images.shape}")
        self.bad_images = "fail"  # one of BAD_IMAGES; build_dataset sets it
        self.skipped: set[int] = set()  # undecodable files skipped in this process (their indices; len = count)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return torch.from_numpy(self.images[index]), int(self.labels[index])
        for offset in range(len(self)):
            item = (index + offset) % len(self)
            image = self._decode(item)
            if image is not None:
                return image, int(self.labels[item])
        raise UserError(f"no image under {self.root} can be decoded (data.bad_images=skip skipped all {len(self)})")

    def _decode(self, index: int) -> torch.Tensor | None:
        """The image of file `index`; None if it cannot be decoded and bad_images is `skip` (warned about once
        per file, and counted in `skipped`), else a UserError naming the file and the option."""
        path = os.path.join(self.root, os.fsdecode(self.files[index]))
        try:
            return read_image(path)
        except UndecodableImage as err:
            if self.bad_images == "fail":
                raise UserError(
                    f"cannot decode image {shown(path)} ({err}); remove or replace it, or set data.bad_images=skip"
                ) from None
        if index not in self.skipped:
            self.skipped.add(index)
            # One clean line on stderr: warnings.warn would print its caller's source line after it.
            warning = f"warning: skipping undecodable image {shown(path)} (data.bad_images=skip)"
            print(warning, file=sys.stderr, flush=True)
        return None


@dataclass(frozen=True)
class DatasetSpec:
    """What the rest of the toolkit needs to know about a dataset before loading it.

    `splits` empty means any sub-folder of the root is a split (imagefolder); `num_classes` 0 means the
    classes come from the data (imagefolder) or there are none (folder).
    """

    name: str
    splits: tuple[str, ...]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    train_split: str = "train"
    test_split: str = "test"
    pretrain_split: str = "train"


Builder = Callable[..., ImageDataset]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    spec: DatasetSpec


_REGISTRY: Registry[_Entry] = Registry("dataset")


def register(spec: DatasetSpec) -> Callable[[Builder], Builder]:
    """Decorator adding `builder(root: Path, split: str, download: bool, *, option=default, ...)` under
    `spec.name`; its keyword-only parameters are the options build_dataset passes through."""

    def add(builder: Builder) -> Builder:
        _REGISTRY.register(spec.name)(_Entry(builder, spec))
        return builder

    return add


def dataset_names() -> list[str]:
    """Every registered dataset name, sorted."""
    return _REGISTRY.names()


def data_settings() -> Declaration:
    """The `data.*` settings: the dataset and where its files are, its splits, a subset, bad-file handling."""
    return {
        "name": one_of(*dataset_names()),
        "root": TEXT,
        "download": BOOL,
        "train_split": TEXT,
        "eval_train_split": optional(TEXT),
        "test_split": optional(TEXT),
        "subset": optional(POSITIVE_INT),
        "bad_images": one_of(*BAD_IMAGES),
        "crop_on_device": AUTO_TRUE_FALSE,
    }


def _entry(name: str) -> _Entry:
    return _REGISTRY.get(name)


def dataset_spec(name: str) -> DatasetSpec:
    """The DatasetSpec registered under `name` (UserError with close matches if unknown)."""
    return _entry(name).spec


def build_dataset(
    name: str, root: str | Path | None, split: str, download: bool = False, bad_images: str = "fail", **options: Any
) -> ImageDataset:
    """Load split `split` of dataset `name` from `root` (None: the current directory, e.g. for synthetic);
    `bad_images` (BAD_IMAGES) is what image files that cannot be decoded do; `options` go to builders that
    declare them."""
    entry = _entry(name)
    spec = entry.spec
    if spec.splits and split not in spec.splits:
        raise UserError(f"dataset {name} has no split {split!r}; valid splits: {', '.join(spec.splits)}")
    if bad_images not in BAD_IMAGES:
        raise UserError(f"data.bad_images must be one of {', '.join(BAD_IMAGES)}, got {bad_images!r}")
    params = inspect.signature(entry.builder).parameters.values()
    accepted = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - accepted)
    if unknown:
        allowed = ", ".join(sorted(accepted)) or "none"
        raise UserError(f"dataset {name} takes no option {', '.join(unknown)}; its options: {allowed}")
    dataset = entry.builder(Path("." if root is None else root).expanduser(), split, download, **options)
    dataset.bad_images = bad_images
    return dataset


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of exactly `n` items, per-class counts as equal as class sizes allow (differing by at
    most one among classes that are not exhausted); deterministic for `seed`. If any label is -1 (unlabeled or
    partly unlabeled data) the subset is a plain random one, since there is nothing to balance."""
    labels = np.asarray(labels)
    if not 1 <= n <= len(labels):
        raise UserError(f"subset size {n} must be between 1 and the dataset size {len(labels)}")
    rng = np.random.default_rng(seed)
    if (labels < 0).any():
        return np.sort(rng.choice(len(labels), size=n, replace=False)).astype(np.int64)
    classes, sizes = np.unique(labels, return_counts=True)
    # Water-filling: the largest level L with sum(min(size, L)) <= n, then one extra for random classes
    # that still have images left, until n is reached.
    lo, hi = 0, int(sizes.max())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(sizes, mid).sum() <= n else (lo, mid - 1)
    quota = np.minimum(sizes, lo)
    open_classes = np.flatnonzero(sizes > lo)
    quota[rng.choice(open_classes, size=n - int(quota.sum()), replace=False)] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


# ----------------------------------------------------------------------------------------------------------
# Shared helpers


def fetch_hint(folder: str) -> str:
    return f"set data.root=DIR to the folder that holds {folder} or data.download=true"


def read_or_download(
    read: Callable[[], ImageDataset], fetch: Callable[[], object], download: bool, root: Path
) -> ImageDataset:
    """Read; if that fails and download is on, let torchvision download into root, then read again. A failed
    download (offline, say) removes what it created, which left an empty or half-written root behind."""
    try:
        return read()
    except UserError:
        if not download:
            raise
    first_missing = next((p for p in reversed([root, *root.parents]) if not p.exists()), None)
    before = set(root.iterdir()) if root.is_dir() else set()
    try:
        fetch()
    except (OSError, RuntimeError, ValueError) as err:
        if first_missing is not None:
            shutil.rmtree(first_missing, ignore_errors=True)
        elif root.is_dir():
            for path in set(root.iterdir()) - before:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise UserError(f"download into {root} failed ({err}); copy the files there by hand") from err
    return read()


def check_labels(labels: np.ndarray, count: int, low: int, high: int, path: Path, hint: str) -> np.ndarray:
    try:
        labels = np.asarray(labels).reshape(-1)
    except (ValueError, TypeError):  # ragged: lists of different lengths make no array
        raise UserError(f"{path} has labels that are not a flat list of integers; {hint}") from None
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and (labels != np.round(labels)).any()):
        raise UserError(f"{path} has non-integer labels of type {labels.dtype}; {hint}")
    if labels.size != count:
        raise UserError(f"{path} holds {count} images but {labels.size} labels; {hint}")
    if labels.size and (labels.min() < low or labels.max() > high):
        raise UserError(f"{path} has labels in [{labels.min()}, {labels.max()}], expected [{low}, {high}]; {hint}")
    return labels.astype(np.int64)


def class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=True))


def image_files(folder: Path) -> list[str]:
    return sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_file(follow_symlinks=True) and e.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def labelled_folder(split_dir: Path, classes: Sequence[str], hint: str) -> ImageDataset:
    """ImageFolder layout split_dir/<class>/<image>; classes absent from split_dir contribute no images."""
    files: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        if (split_dir / name).is_dir():
            names = image_files(split_dir / name)
            files += [f"{name}/{f}" for f in names]
            labels += [index] * len(names)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {split_dir}/<class>/; {hint}")
    return ImageDataset(np.array(labels), classes, root=split_dir, files=files)
