"""Tiny datasets generated in the exact on-disk formats of the transfer tasks: Pascal VOC 2012
segmentation (palette PNGs, ImageSets lists) with SBD `cls/*.mat` masks, Pascal VOC detection XML, COCO
instances JSON and Penn-Fudan instance masks. They exercise each format's corners (grayscale JPEGs,
crowd and degenerate boxes, boundary pixels) and are what the tests and the smoke versions of the studies
train on, so neither needs a download."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from selfsup.data.segmentation import IGNORE_INDEX

SIDE = 64


def image_with_boxes(boxes: list[tuple[int, int, int, int]], height: int = SIDE, width: int = SIDE) -> np.ndarray:
    """HWC uint8: dark noise with a bright rectangle over each pixel-edge box (x1, y1, x2, y2)."""
    rng = np.random.default_rng(len(boxes))
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = (230, 200, 40)
    return image


def _voc_object(name: str, corners: tuple[int, int, int, int], difficult: int) -> str:
    xmin, ymin, xmax, ymax = corners
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def write_voc_detection(root: Path) -> Path:
    """VOCdevkit/VOC2007 with 1-based inclusive corners; 000002 is grayscale, 000003 is in the test list."""
    voc = root / "VOCdevkit" / "VOC2007"
    objects = {
        "000001": [("dog", (5, 10, 30, 40), 0), ("person", (40, 2, 60, 50), 1)],
        "000002": [("car", (1, 1, 64, 20), 0)],
        "000003": [("tvmonitor", (11, 21, 31, 41), 0)],
    }
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / folder).mkdir(parents=True)
    for image_id, objs in objects.items():
        pixels = image_with_boxes([(c[0] - 1, c[1] - 1, c[2], c[3]) for _, c, _ in objs])
        image = Image.fromarray(pixels).convert("L") if image_id == "000002" else Image.fromarray(pixels)
        image.save(voc / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(_voc_object(*obj) for obj in objs)
        (voc / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{SIDE}</width><height>{SIDE}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{body}</annotation>"
        )
    (voc / "ImageSets/Main/trainval.txt").write_text("000001\n000002\n")
    (voc / "ImageSets/Main/test.txt").write_text("000003\n")
    (voc / "ImageSets/Main/dog_trainval.txt").write_text("000001  1\n000002 -1\n")  # per-class lists exist too
    return voc


def write_coco(root: Path, split: str = "val2017", nested: bool = False) -> Path:
    """annotations/instances_<split>.json with non-contiguous category ids, a crowd box, a box past the image
    edge, a degenerate box and an image without annotations; images in <split>/ or images/<split>/."""
    image_dir = root / "images" / split if nested else root / split
    image_dir.mkdir(parents=True)
    (root / "annotations").mkdir()
    images = [
        {"id": 10, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        {"id": 5, "file_name": "empty.jpg", "width": 64, "height": 48},
    ]
    for im in images:
        Image.fromarray(image_with_boxes([], im["height"], im["width"])).save(image_dir / im["file_name"])
    annotations = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [4.5, 6, 20, 10], "iscrowd": 0, "area": 200},
        {"id": 2, "image_id": 10, "category_id": 1, "bbox": [50, 40, 30, 20], "iscrowd": 1, "area": 600},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 0, "area": 100},
        {"id": 4, "image_id": 2, "category_id": 3, "bbox": [5, 5, 0, 4], "iscrowd": 0, "area": 0},
    ]
    categories = [{"id": 3, "name": "car"}, {"id": 1, "name": "person"}, {"id": 7, "name": "dog"}]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def write_pennfudan(root: Path, count: int = 4) -> tuple[Path, list[list[tuple[int, int, int, int]]]]:
    """PennFudanPed with palette PNG instance masks (0 background, 1..K people); returns the pixel-edge boxes."""
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    all_boxes = []
    for i in range(count):
        boxes = [(5 + i, 3, 15 + i, 40), (30, 10 + i, 52, 60)][: 1 + i % 2]
        mask = np.zeros((SIDE, SIDE), dtype=np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes, start=1):
            mask[y1:y2, x1:x2] = k
        name = f"FudanPed{i + 1:05d}"
        Image.fromarray(image_with_boxes(boxes)).save(root / "PNGImages" / f"{name}.png")
        palette_mask = Image.fromarray(mask, mode="P")
        palette_mask.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
        palette_mask.save(root / "PedMasks" / f"{name}_mask.png")
        all_boxes.append(boxes)
    return root, all_boxes


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


def write_voc_segmentation(root: Path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
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
