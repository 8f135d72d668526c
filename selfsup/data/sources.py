"""Dataset registry: a name gives a builder and a DatasetSpec; builders read the native on-disk formats.

Readers check structure (keys, shapes, dtypes, label ranges, record sizes) rather than the official
checksums, so partial or re-packed copies load; anything unexpected is a one-line UserError naming the path
that was looked at and how to get the data. Downloads happen only with download=True, through torchvision's
own dataset classes, after which the same structural reader runs.
"""

from __future__ import annotations

import gzip
import inspect
import os
import re
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, read_file

from selfsup.data.safe_pickle import RefusedGlobal, load_arrays_pickle
from selfsup.data.subsets import IMAGENET50, IMAGENET100, IMAGENET200
from selfsup.errors import UserError
from selfsup.registry import Registry

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
            return decode_image(read_file(path), mode=ImageReadMode.RGB)
        except RuntimeError as err:
            # torchvision starts its messages with the C++ function and source line: keep the reason only.
            reason = re.sub(r"^[^,]*, \S+:\d+, ", "", (str(err).splitlines() or [type(err).__name__])[0])
            if self.bad_images == "fail":
                raise UserError(
                    f"cannot decode image {path} ({reason}); remove or replace it, or set data.bad_images=skip"
                ) from None
        if index not in self.skipped:
            self.skipped.add(index)
            # One clean line on stderr: warnings.warn would print its caller's source line after it.
            print(f"warning: skipping undecodable image {path} (data.bad_images=skip)", file=sys.stderr, flush=True)
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


def _fetch_hint(folder: str) -> str:
    return f"set data.root=DIR to the folder that holds {folder} or data.download=true"


def _read_or_download(
    read: Callable[[], ImageDataset], fetch: Callable[[], object], download: bool, root: Path
) -> ImageDataset:
    """Read; if that fails and download is on, let torchvision download into root, then read again."""
    try:
        return read()
    except UserError:
        if not download:
            raise
    try:
        fetch()
    except (OSError, RuntimeError, ValueError) as err:
        raise UserError(f"download into {root} failed ({err}); copy the files there by hand") from err
    return read()


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


def _check_labels(labels: np.ndarray, count: int, low: int, high: int, path: Path, hint: str) -> np.ndarray:
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and (labels != np.round(labels)).any()):
        raise UserError(f"{path} has non-integer labels of type {labels.dtype}; {hint}")
    if labels.size != count:
        raise UserError(f"{path} holds {count} images but {labels.size} labels; {hint}")
    if labels.size and (labels.min() < low or labels.max() > high):
        raise UserError(f"{path} has labels in [{labels.min()}, {labels.max()}], expected [{low}, {high}]; {hint}")
    return labels.astype(np.int64)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir(follow_symlinks=True))


def _image_files(folder: Path) -> list[str]:
    return sorted(
        e.name
        for e in os.scandir(folder)
        if e.is_file(follow_symlinks=True) and e.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def _labelled_folder(split_dir: Path, classes: Sequence[str], hint: str) -> ImageDataset:
    """ImageFolder layout split_dir/<class>/<image>; classes absent from split_dir contribute no images."""
    files: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        if (split_dir / name).is_dir():
            names = _image_files(split_dir / name)
            files += [f"{name}/{f}" for f in names]
            labels += [index] * len(names)
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {split_dir}/<class>/; {hint}")
    return ImageDataset(np.array(labels), classes, root=split_dir, files=files)


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: python pickle batches

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)


def _read_cifar(folder: Path, batches: Sequence[str], label_key: str, classes: Sequence[str]) -> ImageDataset:
    hint = _fetch_hint(folder.name + "/")
    images, labels = [], []
    for batch in batches:
        path = folder / batch
        entry = _unpickle(path, hint)
        data = entry.get("data") if isinstance(entry, dict) else None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
            raise UserError(f"malformed CIFAR batch {path}: expected a dict with 'data' uint8 [N, 3072]; {hint}")
        if label_key not in entry:
            raise UserError(f"malformed CIFAR batch {path}: no {label_key!r} key; {hint}")
        labels.append(_check_labels(entry[label_key], len(data), 0, len(classes) - 1, path, hint))
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

    return _read_or_download(
        lambda: _read_cifar(root / "cifar-10-batches-py", _CIFAR10_BATCHES[split], "labels", CIFAR10_CLASSES),
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

    return _read_or_download(
        lambda: _read_cifar(root / "cifar-100-python", [split], "fine_labels", CIFAR100_CLASSES),
        lambda: CIFAR100(str(root), train=split == "train", download=True),
        download,
        root,
    )


# ----------------------------------------------------------------------------------------------------------
# SVHN: MATLAB files root/{train,test,extra}_32x32.mat, X is H x W x C x N, label 10 means digit 0


def _read_svhn(path: Path) -> ImageDataset:
    from scipy.io import loadmat

    hint = _fetch_hint(path.name)
    if not path.is_file():
        raise UserError(f"missing file: expected SVHN {path}; {hint}")
    try:
        mat = loadmat(str(path))
    except Exception as err:  # scipy raises many types (MatReadError, ValueError, ...) on corrupt files
        raise UserError(f"malformed SVHN file {path} ({err}); {hint}") from err
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        shape = getattr(x, "shape", None)
        raise UserError(f"malformed SVHN file {path}: expected 'X' uint8 [32, 32, 3, N], got {shape}; {hint}")
    if y is None:
        raise UserError(f"malformed SVHN file {path}: no 'y' labels; {hint}")
    labels = _check_labels(y, x.shape[3], 1, 10, path, hint) % 10
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

    return _read_or_download(
        lambda: _read_svhn(root / f"{split}_32x32.mat"),
        lambda: SVHN(str(root), split=split, download=True),
        download,
        root,
    )


# ----------------------------------------------------------------------------------------------------------
# STL-10: binary files root/stl10_binary/<part>_X.bin (3x96x96 column-major per image), <part>_y.bin (1..10)

STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
_STL10_PARTS = {
    "train": ["train"],
    "test": ["test"],
    "unlabeled": ["unlabeled"],
    "train+unlabeled": ["train", "unlabeled"],
}
_STL10_RECORD = 3 * 96 * 96


def _read_stl10(folder: Path, parts: Sequence[str]) -> ImageDataset:
    hint = _fetch_hint("stl10_binary/")
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
                _check_labels(np.fromfile(path, dtype=np.uint8), count, 1, 10, path, hint) - 1
            )
        start += count
    return ImageDataset(labels, STL10_CLASSES, images=images)


@register(
    DatasetSpec("stl10", tuple(_STL10_PARTS), 10, IMAGENET_MEAN, IMAGENET_STD, 96, pretrain_split="train+unlabeled")
)
def _stl10(root: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import STL10

    return _read_or_download(
        lambda: _read_stl10(root / "stl10_binary", _STL10_PARTS[split]),
        lambda: STL10(str(root), split=split, download=True),
        download,
        root,
    )


# ----------------------------------------------------------------------------------------------------------
# Fashion-MNIST: idx files root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


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
        hint = _fetch_hint("FashionMNIST/raw/")
        images = _read_idx(raw / f"{prefix}-images-idx3-ubyte", (28, 28), hint)
        labels_path = raw / f"{prefix}-labels-idx1-ubyte"
        labels = _check_labels(_read_idx(labels_path, (), hint), len(images), 0, 9, labels_path, hint)
        gray3 = np.repeat(images[:, None], 3, axis=1)
        return ImageDataset(labels, FASHION_MNIST_CLASSES, images=gray3)

    return _read_or_download(
        read, lambda: FashionMNIST(str(root), train=split == "train", download=True), download, root
    )


# ----------------------------------------------------------------------------------------------------------
# ImageNet and its class subsets: root/{train,val}/<wnid>/*.JPEG

_IMAGENET_HINT = (
    "download from image-net.org and lay out as {root}/train/<wnid>/*.JPEG and "
    "{root}/val/<wnid>/*.JPEG, then set data.root=DIR"
)


def _imagenet(root: Path, split: str, wnids: Sequence[str]) -> ImageDataset:
    """ImageNet in ImageFolder layout (nothing to download: the licence needs a login); non-empty `wnids`
    restricts it to a class subset, labelled in sorted wnid order, and every listed class must be present."""
    hint = _IMAGENET_HINT.format(root=root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"missing ImageNet folder: expected {split_dir}/<wnid>/*.JPEG; {hint}")
    classes = sorted(wnids) or _class_dirs(root / "train" if (root / "train").is_dir() else split_dir)
    missing = [w for w in classes if not (split_dir / w).is_dir()]
    if missing:
        raise UserError(
            f"ImageNet {split} lacks {len(missing)} of {len(classes)} class folders, e.g. "
            f"{split_dir / missing[0]}; {hint}"
        )
    return _labelled_folder(split_dir, classes, hint)


def _imagenet_builder(wnids: Sequence[str]) -> Builder:
    def build(root: Path, split: str, download: bool) -> ImageDataset:
        return _imagenet(root, split, wnids)  # no download: see _IMAGENET_HINT

    return build


for _name, _wnids, _num_classes in (
    ("imagenet", (), 1000),
    ("imagenet50", IMAGENET50, 50),
    ("imagenet100", IMAGENET100, 100),
    ("imagenet200", IMAGENET200, 200),
):
    register(DatasetSpec(_name, ("train", "val"), _num_classes, IMAGENET_MEAN, IMAGENET_STD, 224, test_split="val"))(
        _imagenet_builder(_wnids)
    )


# ----------------------------------------------------------------------------------------------------------
# Generic image folders


@register(DatasetSpec("imagefolder", (), 0, IMAGENET_MEAN, IMAGENET_STD, 224, test_split="val"))
def _imagefolder(root: Path, split: str, download: bool) -> ImageDataset:
    """root/<split>/<class>/<image>; classes come from root/train when it exists, so all splits agree."""
    hint = "set data.root=DIR to a folder laid out as DIR/<split>/<class>/<image>"
    split_dir = root / split
    if not split_dir.is_dir():
        found = _class_dirs(root) if root.is_dir() else []
        splits = ", ".join(found) or "none"
        raise UserError(f"missing split folder {split_dir}; splits found: {splits}; {hint}")
    classes = _class_dirs(root / "train" if (root / "train").is_dir() else split_dir)
    unknown = sorted(set(_class_dirs(split_dir)) - set(classes))
    if unknown:
        raise UserError(f"class folder {split_dir / unknown[0]} is not in {root / 'train'}; {hint}")
    return _labelled_folder(split_dir, classes, hint)


@register(DatasetSpec("folder", ("train",), 0, IMAGENET_MEAN, IMAGENET_STD, 224, test_split="train"))
def _folder(root: Path, split: str, download: bool) -> ImageDataset:
    """Every image under root, recursively, unlabeled (-1): for pretraining on one's own photos."""
    files = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, names in os.walk(root, followlinks=True)
        for f in names
        if f.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise UserError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}; set data.root=DIR to a folder of images"
        )
    return ImageDataset(np.full(len(files), -1), [], root=root, files=files)


# ----------------------------------------------------------------------------------------------------------
# Synthetic: procedural 32x32 shapes and textures, for tests and demos that must learn something in seconds

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
