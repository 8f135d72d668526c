"""Dataset registry: native formats round-trip (checked against torchvision's own readers), structural errors
are one-line UserErrors naming the path, balanced subsets, the synthetic dataset, and the real data."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets as tvd
from fixtures_formats import (
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_imagefolder,
    write_stl10,
    write_svhn,
)
from PIL import Image

from selfsup.data.class_lists import class_list
from selfsup.data.datasets.shapes import make_shapes
from selfsup.data.sources import (
    ImageDataset,
    balanced_subset,
    build_dataset,
    dataset_names,
    dataset_spec,
)
from selfsup.errors import UserError

IMAGENET50, IMAGENET100, IMAGENET200 = (class_list(f"imagenet{n}") for n in (50, 100, 200))
SCAN100 = class_list("imagenet100_scan")

REAL_DATA = Path(os.environ.get("SELFSUP_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _items(ds: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """All items through __getitem__ (the path loaders use), stacked."""
    images, labels = zip(*(ds[i] for i in range(len(ds))), strict=True)
    assert all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 for x in images)
    assert all(type(y) is int for y in labels)
    return torch.stack(images).numpy(), np.array(labels)


def _tv_items(ds: tvd.VisionDataset) -> tuple[np.ndarray, np.ndarray]:
    """Items of a torchvision dataset (PIL images) as NCHW uint8 RGB and int labels."""
    pairs = [ds[i] for i in range(len(ds))]
    images = np.stack([np.asarray(img.convert("RGB")).transpose(2, 0, 1) for img, _ in pairs])
    return images, np.array([label for _, label in pairs])


def _user_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert match in message, message
    return message


# ---------------------------------------------------------------------------------------------------------
# registry


def test_registry_names_and_specs():
    assert dataset_names() == sorted(
        [
            "cifar10",
            "cifar100",
            "svhn",
            "stl10",
            "imagenet",
            "imagenet50",
            "imagenet100",
            "imagenet100_scan",
            "imagenet200",
            "fashion_mnist",
            "imagefolder",
            "folder",
            "synthetic",
            "shapes",
        ]
    )
    cifar10 = dataset_spec("cifar10")
    assert (cifar10.mean, cifar10.std) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert (cifar10.num_classes, cifar10.image_size, cifar10.splits) == (10, 32, ("train", "test"))
    assert dataset_spec("cifar100").num_classes == 100
    assert dataset_spec("svhn").mean == (0.4377, 0.4438, 0.4728)
    stl = dataset_spec("stl10")
    assert (stl.pretrain_split, stl.train_split, stl.test_split, stl.image_size) == (
        "train+unlabeled",
        "train",
        "test",
        96,
    )
    assert set(stl.splits) == {"train", "test", "unlabeled", "train+unlabeled"}
    imagenets = (("imagenet", 1000), ("imagenet50", 50), ("imagenet100", 100), ("imagenet100_scan", 100))
    for name, k in (*imagenets, ("imagenet200", 200)):
        spec = dataset_spec(name)
        assert (spec.num_classes, spec.mean, spec.std, spec.test_split) == (
            k,
            (0.485, 0.456, 0.406),
            (0.229, 0.224, 0.225),
            "val",
        )
    assert dataset_spec("fashion_mnist").image_size == 28
    assert all(dataset_spec(n).pretrain_split == "train" for n in dataset_names() if n != "stl10")


def test_unknown_name_lists_close_matches_and_known_names():
    message = _user_error("cifar10", build_dataset, "cifar_10", "/nonexistent", "train")
    assert "did you mean" in message and "synthetic" in message  # the full list follows
    _user_error("imagenet", dataset_spec, "imagnet")


def test_unknown_split_and_option(tmp_path):
    _user_error("valid splits: train, test", build_dataset, "cifar10", tmp_path, "val")
    _user_error("size", build_dataset, "cifar10", tmp_path, "train", size=3)


def test_imagenet_subset_lists():
    for wnids, k in ((IMAGENET50, 50), (IMAGENET100, 100), (SCAN100, 100), (IMAGENET200, 200)):
        assert len(wnids) == len(set(wnids)) == k
        assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert set(IMAGENET50) <= set(SCAN100) <= set(IMAGENET200)  # SCAN's subsets are nested
    assert len(set(SCAN100) & set(IMAGENET100)) == 12  # CMC's ImageNet-100 is another selection
    assert SCAN100[:2] == ("n01558993", "n01601694")  # SCAN's file order
    assert IMAGENET100[:3] == ("n02869837", "n01749939", "n02488291")  # CMC's file order


def test_a_missing_imagenet100_class_names_which_list_it_is(tmp_path):
    """Two published ImageNet-100s share 12 classes: the error says which one was asked for, and the other's name."""
    (tmp_path / "train").mkdir()
    _user_error("data=imagenet100 (CMC's 100 classes; SCAN's 100", build_dataset, "imagenet100", tmp_path, "train")
    scan = "data=imagenet100_scan (SCAN's 100 classes; CMC's"
    _user_error(scan, build_dataset, "imagenet100_scan", tmp_path, "train")


# ---------------------------------------------------------------------------------------------------------
# native formats, compared with what was written and with torchvision's readers


def test_cifar10_round_trip_and_torchvision_agree(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, n_per_batch=4, seed=1)
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *a, **k: True)  # ours are not the official md5s
    for split in ("train", "test"):
        ds = build_dataset("cifar10", tmp_path, split)
        images, labels = _items(ds)
        assert images.shape == (20 if split == "train" else 4, 3, 32, 32)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        np.testing.assert_array_equal(ds.labels, written[split][1])
        tv_images, tv_labels = _tv_items(tvd.CIFAR10(str(tmp_path), train=split == "train"))
        np.testing.assert_array_equal(images, tv_images)
        np.testing.assert_array_equal(labels, tv_labels)
        assert ds.classes[:2] == ["airplane", "automobile"] and len(ds.classes) == 10


def test_cifar100_round_trip_and_torchvision_agree(tmp_path, monkeypatch):
    written = write_cifar100(tmp_path, n_train=120, n_test=30, seed=2)
    monkeypatch.setattr(tvd.cifar, "check_integrity", lambda *a, **k: True)
    for split in ("train", "test"):
        images, labels = _items(build_dataset("cifar100", tmp_path, split))
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        tv_images, tv_labels = _tv_items(tvd.CIFAR100(str(tmp_path), train=split == "train"))
        np.testing.assert_array_equal(images, tv_images)
        np.testing.assert_array_equal(labels, tv_labels)
    assert len(build_dataset("cifar100", tmp_path, "test").classes) == 100


def test_svhn_round_trip_maps_10_to_0(tmp_path, monkeypatch):
    written = write_svhn(tmp_path, n_train=30, n_test=20, seed=3)
    monkeypatch.setattr(tvd.SVHN, "_check_integrity", lambda self: True)
    for split in ("train", "test"):
        images, labels = _items(build_dataset("svhn", tmp_path, split))
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        assert (labels == 0).sum() == (3 if split == "train" else 2)  # digit 0, stored as 10
        tv_images, tv_labels = _tv_items(tvd.SVHN(str(tmp_path), split=split))
        np.testing.assert_array_equal(images, tv_images)
        np.testing.assert_array_equal(labels, tv_labels)


def test_stl10_all_splits_transpose_and_labels(tmp_path, monkeypatch):
    written = write_stl10(tmp_path, n_train=20, n_test=10, n_unlabeled=7, seed=4)
    for split in ("train", "test", "unlabeled", "train+unlabeled"):
        ds = build_dataset("stl10", tmp_path, split)
        images, labels = _items(ds)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
    assert (build_dataset("stl10", tmp_path, "unlabeled").labels == -1).all()
    # The column-major layout, decoded independently by torchvision.
    monkeypatch.setattr(tvd.STL10, "_check_integrity", lambda self: True)
    for split in ("train", "train+unlabeled"):
        tv_images, tv_labels = _tv_items(tvd.STL10(str(tmp_path), split=split))
        images, labels = _items(build_dataset("stl10", tmp_path, split))
        np.testing.assert_array_equal(images, tv_images)
        np.testing.assert_array_equal(labels, tv_labels)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_round_trip_raw_and_gz(tmp_path, gz):
    written = write_fashion_mnist(tmp_path, n_train=30, n_test=20, seed=5, gz=gz)
    for split in ("train", "test"):
        images, labels = _items(build_dataset("fashion_mnist", tmp_path, split))
        assert images.shape == (len(labels), 3, 28, 28)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
        if not gz:
            tv = tvd.FashionMNIST(str(tmp_path), train=split == "train")
            np.testing.assert_array_equal(images[:, 0], tv.data.numpy())
            np.testing.assert_array_equal(labels, tv.targets.numpy())


def test_imagefolder_png_exact_and_classes_from_train(tmp_path):
    written = write_imagefolder(tmp_path, ["dog", "cat", "ant"], n_per_class=3, ext="png")
    for split in ("train", "val"):
        ds = build_dataset("imagefolder", tmp_path, split)
        assert ds.classes == ["ant", "cat", "dog"]
        expected = sorted((rel, ["dog", "cat", "ant"][k], pixels) for rel, k, pixels in written[split])
        images, labels = _items(ds)
        assert [ds.classes[k] for k in labels] == [name for _, name, _ in expected]
        np.testing.assert_array_equal(images, np.stack([p.transpose(2, 0, 1) for _, _, p in expected]))
    # a val split lacking a class keeps the train labels; a class unknown to train is an error
    for f in (tmp_path / "val" / "ant").iterdir():
        f.unlink()
    (tmp_path / "val" / "ant").rmdir()
    assert build_dataset("imagefolder", tmp_path, "val").labels.min() == 1
    (tmp_path / "val" / "bee").mkdir()
    _user_error(str(tmp_path / "val" / "bee"), build_dataset, "imagefolder", tmp_path, "val")
    _user_error("splits found: train, val", build_dataset, "imagefolder", tmp_path, "test")


def test_imagefolder_jpeg_matches_pil(tmp_path):
    written = write_imagefolder(tmp_path, ["a", "b"], n_per_class=2, ext="JPEG", splits=("train",))
    ds = build_dataset("imagefolder", tmp_path, "train")
    for i, (rel, _, _) in enumerate(sorted(written["train"])):
        decoded = np.asarray(Image.open(tmp_path / "train" / rel).convert("RGB")).transpose(2, 0, 1)
        image = ds[i][0].numpy().astype(int)
        assert image.shape == (3, 12, 20)
        assert np.abs(image - decoded).max() <= 2


def test_a_16_bit_png_reads_as_8_bit_rgb_and_a_png_named_jpg_as_png(tmp_path):
    """PNGs are decoded by Pillow, chosen by signature; a 16-bit grey PNG was a uint16 tensor (values up to
    65535 in a uint8 pipeline), it is its high bytes now, as 8-bit images hold them."""
    (tmp_path / "train" / "a").mkdir(parents=True)
    values = np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 257
    Image.fromarray(values).save(tmp_path / "train" / "a" / "deep.png")
    rgb = np.random.default_rng(0).integers(0, 256, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "train" / "a" / "png.jpg", format="PNG")
    ds = build_dataset("imagefolder", tmp_path, "train")
    deep, named_jpg = ds[0][0], ds[1][0]
    assert deep.dtype == torch.uint8 and torch.equal(
        deep, torch.from_numpy(values >> 8).to(torch.uint8).expand(3, -1, -1)
    )
    assert torch.equal(named_jpg, torch.from_numpy(rgb).permute(2, 0, 1))


def test_folder_recursive_unlabeled_and_picklable(tmp_path):
    write_imagefolder(tmp_path, ["x", "y"], n_per_class=2, splits=("train", "val"))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = build_dataset("folder", tmp_path, "train")
    assert len(ds) == 8 and (ds.labels == -1).all() and ds.classes == []
    clone = pickle.loads(pickle.dumps(ds))  # DataLoader workers may receive it pickled
    assert torch.equal(clone[5][0], ds[5][0]) and clone[5][1] == -1
    _user_error("no images", build_dataset, "folder", tmp_path / "empty", "train")


def test_imagenet_subsets_pick_their_wnids(tmp_path):
    extra = "n99999999"
    for split in ("train", "val"):
        for wnid in (*IMAGENET50, extra):
            (tmp_path / split / wnid).mkdir(parents=True)
            # PNG bytes under a .JPEG name, as a few real ImageNet files are: decoding goes by content
            Image.new("RGB", (4, 4), (int(wnid[-2:]), 0, 0)).save(tmp_path / split / wnid / "a.JPEG", "PNG")
    ds = build_dataset("imagenet50", tmp_path, "val")
    assert ds.classes == sorted(IMAGENET50) and len(ds) == 50
    np.testing.assert_array_equal(ds.labels, np.arange(50))
    assert ds[7][0][0, 0, 0].item() == int(sorted(IMAGENET50)[7][-2:])  # the image of the 8th wnid
    assert len(build_dataset("imagenet", tmp_path, "train").classes) == 51  # full ImageNet: every folder
    missing = tmp_path / "val" / IMAGENET50[3]
    (missing / "a.JPEG").unlink()
    missing.rmdir()
    _user_error(str(missing), build_dataset, "imagenet50", tmp_path, "val")
    message = _user_error("image-net.org", build_dataset, "imagenet100", tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere" / "train") in message


# ---------------------------------------------------------------------------------------------------------
# structural errors: one line naming the path and how to get the data


def test_missing_dataset_names_path_and_fix(tmp_path):
    message = _user_error(
        str(tmp_path / "cifar-10-batches-py" / "data_batch_1"), build_dataset, "cifar10", tmp_path, "train"
    )
    assert "data.root=" in message and "data.download=true" in message
    _user_error(str(tmp_path / "train_32x32.mat"), build_dataset, "svhn", tmp_path, "train")
    _user_error(str(tmp_path / "stl10_binary" / "unlabeled_X.bin"), build_dataset, "stl10", tmp_path, "unlabeled")
    _user_error("t10k-images-idx3-ubyte", build_dataset, "fashion_mnist", tmp_path, "test")


def test_cifar_structural_errors(tmp_path):
    write_cifar10(tmp_path, n_per_batch=3)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    _user_error(str(folder / "data_batch_3"), build_dataset, "cifar10", tmp_path, "train")
    assert len(build_dataset("cifar10", tmp_path, "test")) == 3  # the test split does not need it
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(good[: len(good) // 2])  # truncated
    _user_error(str(folder / "test_batch"), build_dataset, "cifar10", tmp_path, "test")
    for bad in (
        {"data": np.zeros((3, 100), np.uint8), "labels": [0, 1, 2]},  # wrong shape
        {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 10]},  # label out of range
        {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]},  # label count
        {"data": np.zeros((3, 3072), np.uint8)},  # no labels
        [1, 2, 3],
    ):  # not a dict
        (folder / "test_batch").write_bytes(pickle.dumps(bad))
        _user_error(str(folder / "test_batch"), build_dataset, "cifar10", tmp_path, "test")


def test_a_cifar_batch_of_zero_images_is_called_empty_not_malicious(tmp_path):
    """Protocol 2 (the official files') writes an empty array's buffer as bytes(), which the safe unpickler
    refused as code to run (issue 37 item 9); bytes(n), n zero bytes the file does not hold, stays refused."""
    write_cifar10(tmp_path, n_per_batch=3)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": np.zeros((0, 3072), np.uint8), "labels": []}, protocol=2))
    _user_error(f"CIFAR batch {batch} is empty (0 images)", build_dataset, "cifar10", tmp_path, "test")

    class Allocates:
        def __reduce__(self):
            return bytes, (2**40,)

    batch.write_bytes(pickle.dumps(Allocates(), protocol=2))
    _user_error("it asks to run bytes(int)", build_dataset, "cifar10", tmp_path, "test")


def test_other_structural_errors(tmp_path):
    from scipy.io import savemat

    write_svhn(tmp_path, 10, 10)
    savemat(
        str(tmp_path / "test_32x32.mat"),
        {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[1], [2], [11], [3]], np.uint8)},
    )
    _user_error("expected [1, 10]", build_dataset, "svhn", tmp_path, "test")
    savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1))})
    _user_error(str(tmp_path / "test_32x32.mat"), build_dataset, "svhn", tmp_path, "test")
    (tmp_path / "train_32x32.mat").write_bytes(b"garbage")
    _user_error(str(tmp_path / "train_32x32.mat"), build_dataset, "svhn", tmp_path, "train")

    write_stl10(tmp_path, 4, 4, 2)
    stl = tmp_path / "stl10_binary"
    with (stl / "test_X.bin").open("ab") as f:
        f.write(b"\0" * 5)
    _user_error(str(stl / "test_X.bin"), build_dataset, "stl10", tmp_path, "test")
    (stl / "train_y.bin").write_bytes(bytes([1, 2, 11, 3]))
    _user_error(str(stl / "train_y.bin"), build_dataset, "stl10", tmp_path, "train+unlabeled")

    write_fashion_mnist(tmp_path, 5, 5)
    raw = tmp_path / "FashionMNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes((raw / "train-images-idx3-ubyte").read_bytes()[:-1])
    _user_error(str(raw / "train-images-idx3-ubyte"), build_dataset, "fashion_mnist", tmp_path, "train")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 3]) + b"\0" * 20)
    _user_error(str(raw / "t10k-labels-idx1-ubyte"), build_dataset, "fashion_mnist", tmp_path, "test")


def test_download_goes_through_torchvision_then_our_reader(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR10:  # stands in for the network: writes the native files where torchvision would
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_cifar10(root, n_per_batch=2)

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    _user_error("data.download=true", build_dataset, "cifar10", tmp_path, "test")
    assert calls == []  # download=False never downloads
    assert len(build_dataset("cifar10", tmp_path, "test", download=True)) == 2
    assert calls == [(str(tmp_path), False, True)]
    assert len(build_dataset("cifar10", tmp_path, "train", download=True)) == 10
    assert len(calls) == 1  # present files are read, not fetched again


def test_a_failed_download_removes_what_it_created(tmp_path, monkeypatch):
    """Offline, data.download=true left an empty root (issue 37 item 9); a partial archive in an existing
    root goes too, and what was there before stays."""

    class OfflineCIFAR10:  # torchvision makes the root and starts the archive, then the network fails
        def __init__(self, root, train, download):
            Path(root).mkdir(parents=True, exist_ok=True)
            (Path(root) / "cifar-10-python.tar.gz").write_bytes(b"partial")
            raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvd, "CIFAR10", OfflineCIFAR10)
    root = tmp_path / "new" / "cifar"
    _user_error("failed", build_dataset, "cifar10", root, "test", download=True)
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept.txt"
    kept.write_text("mine")
    _user_error("failed", build_dataset, "cifar10", tmp_path, "test", download=True)
    assert list(tmp_path.iterdir()) == [kept]


# ---------------------------------------------------------------------------------------------------------
# balanced_subset


def test_balanced_subset_balanced_classes():
    labels = np.repeat(np.arange(10), 50)
    np.random.default_rng(0).shuffle(labels)
    for n in (1, 7, 10, 123, 499, 500):
        idx = balanced_subset(labels, n, seed=3)
        assert len(idx) == n and idx.dtype == np.int64
        assert (np.diff(idx) > 0).all()  # sorted, unique
        counts = np.bincount(labels[idx], minlength=10)
        assert counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(balanced_subset(labels, 123, seed=3), balanced_subset(labels, 123, seed=3))
    assert not np.array_equal(balanced_subset(labels, 123, seed=3), balanced_subset(labels, 123, seed=4))


def test_balanced_subset_imbalanced_matches_round_robin():
    rng = np.random.default_rng(0)
    for trial in range(30):
        sizes = rng.integers(1, 40, rng.integers(2, 8))
        labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
        n = int(rng.integers(1, len(labels) + 1))
        counts = np.bincount(labels[balanced_subset(labels, n, seed=trial)], minlength=len(sizes))
        # reference: hand out one image at a time to the emptiest class that still has images
        ref = np.zeros(len(sizes), int)
        for _ in range(n):
            open_ = np.flatnonzero(ref < sizes)
            ref[open_[np.argmin(ref[open_])]] += 1
        np.testing.assert_array_equal(np.sort(counts), np.sort(ref))
        assert (counts <= sizes).all()
        not_full = counts < sizes  # classes with images left differ by at most one, and hold the most
        if not_full.any():
            assert np.ptp(counts[not_full]) <= 1 and (counts[~not_full] <= counts[not_full].max()).all()


def test_balanced_subset_unlabeled_and_bounds():
    labels = np.full(100, -1)
    idx = balanced_subset(labels, 30, seed=0)
    assert len(np.unique(idx)) == 30 and idx.min() >= 0 and idx.max() < 100
    np.testing.assert_array_equal(idx, balanced_subset(labels, 30, seed=0))
    for n in (0, 101):
        _user_error("between 1 and the dataset size 100", balanced_subset, labels, n, 0)


# ---------------------------------------------------------------------------------------------------------
# synthetic


def _nearest_class_mean(train_x, train_y, test_x, test_y) -> float:
    means = np.stack([train_x[train_y == k].mean(0) for k in range(10)])
    dist = ((test_x[:, None] - means[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == test_y).mean())


def test_synthetic_deterministic_sized_and_balanced():
    train = build_dataset("synthetic", "", "train")
    test = build_dataset("synthetic", "", "test")
    assert (len(train), len(test)) == (2000, 500)
    assert train.images.shape == (2000, 3, 32, 32) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 200))
    again = build_dataset("synthetic", "", "train")
    np.testing.assert_array_equal(train.images, again.images)
    np.testing.assert_array_equal(train.labels, again.labels)
    other = build_dataset("synthetic", "", "train", seed=1)
    assert not np.array_equal(train.images, other.images)
    assert not np.array_equal(train.images[:500], test.images)
    assert len(build_dataset("synthetic", None, "test", size=30)) == 30
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and 0 <= y < 10
    spec = dataset_spec("synthetic")
    pixels = train.images.astype(np.float64) / 255
    np.testing.assert_allclose(pixels.mean((0, 2, 3)), spec.mean, atol=0.01)
    np.testing.assert_allclose(pixels.std((0, 2, 3)), spec.std, atol=0.01)


def test_synthetic_classes_are_learnable_from_shape_not_only_colour():
    train = build_dataset("synthetic", "", "train")
    test = build_dataset("synthetic", "", "test")
    flat = [d.images.reshape(len(d), -1).astype(np.float32) / 255 for d in (train, test)]
    assert _nearest_class_mean(flat[0], train.labels, flat[1], test.labels) > 0.6  # chance: 0.1

    def spectrum(d: ImageDataset) -> np.ndarray:
        """Grayscale amplitude spectrum: colour-free and invariant to where the object sits."""
        gray = d.images.astype(np.float32).mean(1)
        amp = np.abs(np.fft.fft2(gray - gray.mean((1, 2), keepdims=True))).reshape(len(d), -1)
        return amp / np.linalg.norm(amp, axis=1, keepdims=True)

    assert _nearest_class_mean(spectrum(train), train.labels, spectrum(test), test.labels) > 0.8


def test_shapes_deterministic_balanced_and_equal_in_area():
    train = build_dataset("shapes", "", "train")
    test = build_dataset("shapes", "", "test")
    assert (len(train), len(test)) == (2000, 1000) and train.images.shape[1:] == (3, 24, 24)
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(4, 500))
    np.testing.assert_array_equal(train.images, build_dataset("shapes", "", "train").images)
    assert not np.array_equal(train.images[:1000], test.images)
    assert not np.array_equal(train.images, build_dataset("shapes", "", "train", seed=1).images)
    # Grey (the class is not in the colour) and every class covers the same mean area: the foreground is
    # at 0.8, the background at 0.2, so the mean level gives the covered fraction.
    clean = make_shapes(4000, 0, noise=0.0)
    assert (clean.images == clean.images[:, :1]).all()
    covered = (clean.images.astype(np.float64).mean((1, 2, 3)) / 255 - 0.2) / 0.6
    per_class = [covered[clean.labels == c].mean() for c in range(4)]
    np.testing.assert_allclose(per_class, 0.165, atol=0.01)  # the mean of uniform(0.08, 0.25)
    spec = dataset_spec("shapes")
    pixels = train.images.astype(np.float64) / 255
    np.testing.assert_allclose(pixels.mean((0, 2, 3)), spec.mean, atol=0.01)
    np.testing.assert_allclose(pixels.std((0, 2, 3)), spec.std, atol=0.01)


# ---------------------------------------------------------------------------------------------------------
# real data (../shared/data or SELFSUP_DATA)


@pytest.mark.skipif(not (REAL_DATA / "cifar-10-batches-py").is_dir(), reason="real CIFAR-10 subset absent")
def test_real_cifar10_subset():
    train = build_dataset("cifar10", REAL_DATA, "train")
    test = build_dataset("cifar10", REAL_DATA, "test")
    # What the files hold, read here with plain pickle (trusted local files): the subset and the full set alike.
    batches = REAL_DATA / "cifar-10-batches-py"
    raw = {
        name: pickle.loads((batches / name).read_bytes(), encoding="latin1")
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    }
    train_size = sum(len(raw[f"data_batch_{i}"]["labels"]) for i in range(1, 6))
    assert (len(train), len(test)) == (train_size, len(raw["test_batch"]["labels"]))
    np.testing.assert_array_equal(train.images[0].reshape(-1), raw["data_batch_1"]["data"][0])
    np.testing.assert_array_equal(test.labels, raw["test_batch"]["labels"])
    for ds in (train, test):
        assert set(np.unique(ds.labels)) == set(range(10))
        assert ds.images.shape[1:] == (3, 32, 32)
    mean = train.images.astype(np.float64).mean((0, 2, 3)) / 255
    np.testing.assert_allclose(mean, dataset_spec("cifar10").mean, atol=0.01)  # a true CIFAR-10 sample


@pytest.mark.skipif(not (REAL_DATA / "FashionMNIST" / "raw").is_dir(), reason="real Fashion-MNIST absent")
def test_real_fashion_mnist():
    train = build_dataset("fashion_mnist", REAL_DATA, "train")
    test = build_dataset("fashion_mnist", REAL_DATA, "test")
    assert (len(train), len(test)) == (60000, 10000)
    x, y = test[0]
    assert x.shape == (3, 28, 28) and x.dtype == torch.uint8 and 0 <= y <= 9
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
    assert abs(train.images[:, 0].mean() / 255 - dataset_spec("fashion_mnist").mean[0]) < 0.001
