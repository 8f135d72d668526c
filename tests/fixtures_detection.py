"""Writers of tiny detection datasets in the exact on-disk formats: Pascal VOC XML, COCO instances JSON,
Penn-Fudan PNG instance masks (used by test_detection.py and the CLI transfer tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

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


def write_voc(root: Path) -> Path:
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
