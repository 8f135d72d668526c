"""Writers of tiny datasets in the exact native on-disk formats (as torchvision's loaders read them).

Every writer draws random pixels from `seed` and returns what it wrote as NCHW uint8 images with 0-based
labels (-1 for unlabeled), so tests can compare a reader's output with the ground truth item by item.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

Split = tuple[np.ndarray, np.ndarray]  # images uint8 [N, 3, H, W], labels int64 [N]


def _images(rng: np.random.Generator, n: int, side: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8)


def _labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """Every class appears when n >= num_classes, in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _pickle(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: str | Path, n_per_batch: int = 4, seed: int = 0) -> dict[str, Split]:
    """root/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta (dicts with data [N, 3072] uint8:
    1024 R, 1024 G, 1024 B values per row, row-major 32x32; labels a list of ints)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    out: dict[str, list[Split]] = {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images, labels = _images(rng, n_per_batch, 32), _labels(rng, n_per_batch, 10)
        _pickle(
            folder / name,
            {
                "batch_label": f"{name} of 6",
                "labels": labels.tolist(),
                "data": images.reshape(n_per_batch, 3072),
                "filenames": [f"{name}_{i}.png" for i in range(n_per_batch)],
            },
        )
        out["test" if name == "test_batch" else "train"].append((images, labels))
    _pickle(
        folder / "batches.meta",
        {
            "num_cases_per_batch": n_per_batch,
            "num_vis": 3072,
            "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        },
    )
    return {
        split: (np.concatenate([i for i, _ in parts]), np.concatenate([lab for _, lab in parts]))
        for split, parts in out.items()
    }


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> dict[str, Split]:
    """root/cifar-100-python/train, test, meta (dicts with data [N, 3072], fine_labels, coarse_labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = _images(rng, n, 32), _labels(rng, n, 100)
        _pickle(
            folder / split,
            {
                "filenames": [f"{i}.png" for i in range(n)],
                "batch_label": split,
                "fine_labels": labels.tolist(),
                "coarse_labels": (labels // 5).tolist(),
                "data": images.reshape(n, 3072),
            },
        )
        out[split] = (images, labels)
    _pickle(
        folder / "meta",
        {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]},
    )
    return out


def write_svhn(root: str | Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, Split]:
    """root/{train,test}_32x32.mat: MATLAB v5, X uint8 [32, 32, 3, N], y uint8 [N, 1] with digit 0 as 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    Path(root).mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, digits = _images(rng, n, 32), _labels(rng, n, 10)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(str(Path(root) / f"{split}_32x32.mat"), {"X": images.transpose(2, 3, 1, 0), "y": y})
        out[split] = (images, digits)
    return out


def write_stl10(
    root: str | Path, n_train: int = 20, n_test: int = 10, n_unlabeled: int = 7, seed: int = 0
) -> dict[str, Split]:
    """root/stl10_binary/{train,test,unlabeled}_X.bin (each image 3x96x96 in column-major order, i.e. each
    channel stored transposed), {train,test}_y.bin (uint8 labels 1..10), class_names.txt."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        images = _images(rng, n, 96)
        labels = np.full(n, -1, dtype=np.int64) if part == "unlabeled" else _labels(rng, n, 10)
        (folder / f"{part}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[part] = (images, labels)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    out["train+unlabeled"] = (
        np.concatenate([out["train"][0], out["unlabeled"][0]]),
        np.concatenate([out["train"][1], out["unlabeled"][1]]),
    )
    return out


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(
    root: str | Path, n_train: int = 30, n_test: int = 20, seed: int = 0, gz: bool = False
) -> dict[str, Split]:
    """root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (or .gz); returned images are the
    28x28 grayscale planes repeated to 3 channels, as the reader serves them."""
    rng = np.random.default_rng(seed)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        gray, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), _labels(rng, n, 10)
        for kind, array in (("images-idx3", gray), ("labels-idx1", labels)):
            data = _idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (raw / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / name).write_bytes(data)
        out[split] = (np.repeat(gray[:, None], 3, axis=1), labels)
    return out


def write_imagefolder(
    root: str | Path,
    classes: list[str],
    n_per_class: int,
    ext: str = "png",
    splits: tuple[str, ...] = ("train", "val"),
    size: tuple[int, int] = (12, 20),
    seed: int = 0,
) -> dict[str, list[tuple[str, int, np.ndarray]]]:
    """root/<split>/<class>/<i>.<ext>, each image random RGB of `size` (H, W); returns per split a list of
    (path relative to root/<split>, class index in `classes`, the HWC uint8 pixels that were encoded)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[str, int, np.ndarray]]] = {}
    for split in splits:
        out[split] = []
        for label, name in enumerate(classes):
            (Path(root) / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                rel = f"{name}/{i:03d}.{ext}"
                Image.fromarray(pixels).save(Path(root) / split / rel, quality=95)
                out[split].append((rel, label, pixels))
    return out
