"""Writers of a tiny Pascal VOC 2012 segmentation set (palette PNGs, JPEGs, ImageSets lists) with SBD
`cls/*.mat` masks, in the exact on-disk formats (used by test_segmentation.py and the CLI transfer tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from selfsup.data.segmentation import IGNORE_INDEX

H, W = 48, 64
VOC_TRAIN = ["2007_000032", "2007_000039", "2007_000063", "2007_000068"]
VOC_VAL = ["2007_000033", "2007_000042"]
SBD_TRAIN = ["2007_000039", "2008_000002"]  # 2007_000039 also has a VOC PNG, which wins
SBD_VAL = ["2007_000033", "2008_000003"]  # 2007_000033 is VOC val: left out of train_aug


def voc_palette() -> list[int]:
    """The VOC devkit's colour map (VOClabelcolormap.m): bits of the index spread over R, G, B."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def random_mask(rng: np.random.Generator) -> np.ndarray:
    """Background with a few object rectangles, each outlined by a 1-px 255 boundary as VOC marks them."""
    mask = np.zeros((H, W), np.uint8)
    for cls in rng.choice(np.arange(1, 21), size=3, replace=False):
        y, x = int(rng.integers(0, H - 14)), int(rng.integers(0, W - 14))
        mask[y : y + 14, x : x + 14] = IGNORE_INDEX
        mask[y + 1 : y + 13, x + 1 : x + 13] = cls
    return mask


def image_of(mask: np.ndarray) -> np.ndarray:
    """HWC uint8: each class painted in its palette colour, so a network can learn the masks."""
    return np.array(voc_palette(), np.uint8).reshape(256, 3)[mask]


def write_png_mask(path: Path, mask: np.ndarray) -> None:
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(voc_palette())
    image.save(path)


def write_sbd_mat(path: Path, mask: np.ndarray) -> None:
    """SBD's cls/<id>.mat: a 1x1 struct GTcls with Boundaries (20x1 cell of sparse), Segmentation, CategoriesPresent."""
    boundaries = np.empty((20, 1), dtype=object)
    for i in range(20):
        boundaries[i, 0] = scipy.sparse.csc_matrix(mask == i + 1)
    present = np.unique(mask[(mask > 0) & (mask < 21)]).astype(np.uint8).reshape(-1, 1)
    gt = {"Boundaries": boundaries, "Segmentation": mask, "CategoriesPresent": present}
    scipy.io.savemat(path, {"GTcls": gt})


def write_voc(root: Path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """VOCdevkit/VOC2012 and SBD's benchmark_RELEASE/dataset; returns the masks written, by source and id."""
    rng = np.random.default_rng(seed)
    voc, sbd = root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation", sbd / "cls"):
        folder.mkdir(parents=True)
    written: dict[str, dict[str, np.ndarray]] = {"png": {}, "mat": {}}
    for name, ids in (("train", VOC_TRAIN), ("val", VOC_VAL), ("trainval", VOC_TRAIN + VOC_VAL)):
        (voc / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    for i in VOC_TRAIN + VOC_VAL:
        written["png"][i] = random_mask(rng)
        write_png_mask(voc / "SegmentationClass" / f"{i}.png", written["png"][i])
    for name, ids in (("train", SBD_TRAIN), ("val", SBD_VAL)):
        (sbd / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    for i in SBD_TRAIN + SBD_VAL:
        written["mat"][i] = np.clip(random_mask(rng), 0, 20)  # SBD marks no boundaries
        write_sbd_mat(sbd / "cls" / f"{i}.mat", written["mat"][i])
    for i in sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL)):
        mask = written["png"].get(i, written["mat"].get(i))
        Image.fromarray(image_of(mask)).save(voc / "JPEGImages" / f"{i}.jpg", quality=95)
    return written
