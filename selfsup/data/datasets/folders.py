"""Image folders: ImageNet and its class subsets (root/{train,val}/<wnid>/*.JPEG), any ImageFolder layout
(root/<split>/<class>/<image>) and a plain folder of unlabeled images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selfsup.data.class_lists import class_list
from selfsup.data.sources import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Builder,
    DatasetSpec,
    ImageDataset,
    class_dirs,
    labelled_folder,
    register,
)
from selfsup.errors import UserError

_IMAGENET_HINT = (
    "download from image-net.org and lay out as {root}/train/<wnid>/*.JPEG and "
    "{root}/val/<wnid>/*.JPEG, then set data.root=DIR"
)


# Which published list each subset is: two different "ImageNet-100"s share 12 classes, so errors name it.
SUBSET_SOURCES = {
    "imagenet50": "SCAN's 50 classes",
    "imagenet100": "CMC's 100 classes; SCAN's 100, as the SimCLR toolbox uses, are data=imagenet100_scan",
    "imagenet100_scan": "SCAN's 100 classes; CMC's 100 are data=imagenet100",
    "imagenet200": "SCAN's 200 classes",
}


def _imagenet(root: Path, split: str, wnids: Sequence[str], name: str = "imagenet") -> ImageDataset:
    """ImageNet in ImageFolder layout (nothing to download: the licence needs a login); non-empty `wnids`
    restricts it to a class subset, labelled in sorted wnid order, and every listed class must be present."""
    hint = _IMAGENET_HINT.format(root=root)
    split_dir = root / split
    if not split_dir.is_dir():
        raise UserError(f"missing ImageNet folder: expected {split_dir}/<wnid>/*.JPEG; {hint}")
    classes = sorted(wnids) or class_dirs(root / "train" if (root / "train").is_dir() else split_dir)
    missing = [w for w in classes if not (split_dir / w).is_dir()]
    if missing:
        raise UserError(
            f"ImageNet {split} lacks {len(missing)} of {len(classes)} class folders of data={name}"
            f"{f' ({SUBSET_SOURCES[name]})' if name in SUBSET_SOURCES else ''}, e.g. {split_dir / missing[0]}; {hint}"
        )
    return labelled_folder(split_dir, classes, hint)


def _imagenet_builder(name: str, wnids: Sequence[str]) -> Builder:
    def build(root: Path, split: str, download: bool) -> ImageDataset:
        return _imagenet(root, split, wnids, name)  # no download: see _IMAGENET_HINT

    return build


for _name, _wnids, _num_classes in (
    ("imagenet", (), 1000),
    ("imagenet50", class_list("imagenet50"), 50),
    ("imagenet100", class_list("imagenet100"), 100),
    ("imagenet100_scan", class_list("imagenet100_scan"), 100),
    ("imagenet200", class_list("imagenet200"), 200),
):
    register(DatasetSpec(_name, ("train", "val"), _num_classes, IMAGENET_MEAN, IMAGENET_STD, 224, test_split="val"))(
        _imagenet_builder(_name, _wnids)
    )


# ----------------------------------------------------------------------------------------------------------
# Generic image folders


@register(DatasetSpec("imagefolder", (), 0, IMAGENET_MEAN, IMAGENET_STD, 224, test_split="val"))
def _imagefolder(root: Path, split: str, download: bool) -> ImageDataset:
    """root/<split>/<class>/<image>; classes come from root/train when it exists, so all splits agree."""
    hint = "set data.root=DIR to a folder laid out as DIR/<split>/<class>/<image>"
    split_dir = root / split
    if not split_dir.is_dir():
        found = class_dirs(root) if root.is_dir() else []
        splits = ", ".join(found) or "none"
        raise UserError(f"missing split folder {split_dir}; splits found: {splits}; {hint}")
    classes = class_dirs(root / "train" if (root / "train").is_dir() else split_dir)
    unknown = sorted(set(class_dirs(split_dir)) - set(classes))
    if unknown:
        raise UserError(f"class folder {split_dir / unknown[0]} is not in {root / 'train'}; {hint}")
    return labelled_folder(split_dir, classes, hint)


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
