"""Detection datasets in their native layouts: Pascal VOC XML, COCO instances JSON and Penn-Fudan masks.

An item is (image uint8 [3, H, W] RGB, target) with target
`{"boxes": float32 [N, 4] xyxy, "labels": int64 [N] in 1..C, "iscrowd": int64 [N], "image_id": int}`:
label 0 is the detector's background, `image_id` is the item's index in the split. Box coordinates are
pixel edges: a box covering pixel columns 0..9 runs from x=0 to x=10 (VOC's 1-based inclusive corners
become (xmin - 1, ymin - 1, xmax, ymax), as torchvision's references convert them).

`iscrowd` = 1 marks boxes to leave out of training and to ignore in evaluation: COCO crowd regions, and VOC
`difficult` objects. COCO's rules (pycocotools) then neither reward nor penalise detections on them, which is
how VOC's own evaluation treats difficult objects, except that a detection is matched to an ignored box by
intersection over the detection's area rather than by IoU.

Annotations are parsed once when a split is loaded, and every listed image is checked to exist, so a wrong
root fails before training starts; anything missing or malformed is a one-line UserError naming the path
and the setting that fixes it.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import masks_to_boxes

from selfsup.data.images import UndecodableImage, read_image, read_text_list, shown
from selfsup.errors import UserError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
# Penn-Fudan has no official split: the last images in sorted file order are the test split.
PENNFUDAN_TEST_IMAGES = 50


class DetectionDataset(Dataset):
    """Image files under `root` with their boxes, held as flat numpy arrays (one row per box, `offsets[i]` the
    first row of image i) rather than per-image Python objects, which loader workers would copy."""

    def __init__(
        self,
        root: str | Path,
        files: Sequence[str],
        boxes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        crowd: Sequence[np.ndarray],
        class_names: Sequence[str],
    ) -> None:
        if not len(files) == len(boxes) == len(labels) == len(crowd):
            raise ValueError("DetectionDataset needs boxes, labels and crowd flags for every file")
        self.root = str(root)
        self.files = np.array([os.fsencode(f) for f in files], dtype=np.bytes_)
        self.offsets = np.cumsum([0] + [len(b) for b in boxes], dtype=np.int64)
        self.boxes = np.concatenate([np.zeros((0, 4), np.float32), *boxes]).astype(np.float32)
        self.labels = np.concatenate([np.zeros(0, np.int64), *labels]).astype(np.int64)
        self.crowd = np.concatenate([np.zeros(0, np.int64), *crowd]).astype(np.int64)
        self.class_names = list(class_names)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_boxes(self) -> int:
        """Boxes that count (not crowd / difficult)."""
        return int((self.crowd == 0).sum())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        path = os.path.join(self.root, os.fsdecode(self.files[index]))
        try:
            image = read_image(path)
        except UndecodableImage as err:
            raise UserError(f"cannot decode image {shown(path)} ({err}); remove or replace the file") from None
        rows = slice(self.offsets[index], self.offsets[index + 1])
        target = {
            "boxes": torch.from_numpy(self.boxes[rows].copy()),
            "labels": torch.from_numpy(self.labels[rows].copy()),
            "iscrowd": torch.from_numpy(self.crowd[rows].copy()),
            "image_id": index,
        }
        return image, target


def _valid(boxes: np.ndarray) -> np.ndarray:
    """Rows with positive width and height: Faster R-CNN refuses degenerate boxes in training."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def _check_images(root: Path, files: Sequence[str], listed_in: Path, hint: str) -> None:
    for name in files:
        if not (root / name).is_file():
            raise UserError(f"missing image {shown(root / name)} (listed in {listed_in}); {hint}")


# ----------------------------------------------------------------------------------------------------------
# Pascal VOC: root/Annotations/<id>.xml, root/ImageSets/Main/<split>.txt, root/JPEGImages/<id>.jpg

_VOC_HINT = (
    "set eval.detection.root=.../VOCdevkit/VOC2007 (or VOC2012), the folder holding Annotations/ and JPEGImages/"
)


def _voc_objects(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (converted to pixel edges), labels and difficult flags of one VOC annotation file."""
    if not path.is_file():
        raise UserError(f"missing VOC annotation {path}; {_VOC_HINT}")
    try:
        objects = ET.parse(path).getroot().findall("object")
        names = [obj.findtext("name", "").strip() for obj in objects]
        corners = [[float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] for obj in objects]
        difficult = [int(obj.findtext("difficult", "0").strip() or 0) for obj in objects]
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise UserError(f"malformed VOC annotation {path} ({type(err).__name__}: {err}); {_VOC_HINT}") from err
    unknown = [n for n in names if n not in VOC_CLASSES]
    if unknown:
        raise UserError(f"{path} has an object of class {unknown[0]!r}, not one of the 20 VOC classes; {_VOC_HINT}")
    boxes = np.array(corners, dtype=np.float32).reshape(-1, 4) - np.array([1, 1, 0, 0], dtype=np.float32)
    labels = np.array([VOC_CLASSES.index(n) + 1 for n in names], dtype=np.int64)
    keep = _valid(boxes)
    return boxes[keep], labels[keep], (np.array(difficult, dtype=np.int64) != 0)[keep].astype(np.int64)


def _voc(root: Path, split: str) -> DetectionDataset:
    if not (root / "Annotations").is_dir():
        raise UserError(f"no VOC annotations in {root} (expected {root / 'Annotations'}/); {_VOC_HINT}")
    list_file = root / "ImageSets" / "Main" / f"{split}.txt"
    if not list_file.is_file():
        found = sorted(p.stem for p in list_file.parent.glob("*.txt") if "_" not in p.stem)
        raise UserError(
            f"missing VOC image list {list_file}; set eval.detection.train_split / test_split to one of: "
            f"{', '.join(found) or 'none found'}"
        )
    ids = [line.split()[0] for line in read_text_list(list_file).splitlines() if line.strip()]
    if not ids:
        raise UserError(f"VOC image list {list_file} is empty; {_VOC_HINT}")
    files = [f"JPEGImages/{i}.jpg" for i in ids]
    _check_images(root, files, list_file, _VOC_HINT)
    boxes, labels, crowd = zip(*(_voc_objects(root / "Annotations" / f"{i}.xml") for i in ids), strict=True)
    return DetectionDataset(root, files, boxes, labels, crowd, VOC_CLASSES)


# ----------------------------------------------------------------------------------------------------------
# COCO: root/annotations/instances_<split>.json, images in root/<split>/ or root/images/<split>/

_COCO_HINT = (
    "set eval.detection.root=DIR to a COCO root holding annotations/instances_<split>.json and <split>/ "
    "(or images/<split>/)"
)


# What each entry of the three lists needs (iscrowd is optional: 0 when absent).
_COCO_FIELDS = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


class _MalformedCoco(Exception):
    """What is wrong with an annotations file, said in one line."""


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "text", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _short(value: object) -> str:
    text = repr(value)  # one line: repr escapes newlines
    return text if len(text) <= 40 else f"{text[:37]}..."


def _finite(value: object) -> float | None:
    """A JSON number as a finite float, else None (text, booleans, null, NaN, infinity, 1e400 as an integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if np.isfinite(number) and abs(number) < 3e38 else None  # float32 holds it


def _is_id(value: object) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _coco_entries(data: object) -> dict[str, list[dict[str, Any]]]:
    """The images, annotations and categories lists, each entry an object with the fields it needs."""
    if not isinstance(data, dict):
        raise _MalformedCoco(f"its top level is {_json_type(data)}, not an object")
    entries = {}
    for section, fields in _COCO_FIELDS.items():
        if not isinstance(data.get(section), list):
            found = "missing" if section not in data else _json_type(data[section])
            raise _MalformedCoco(f"its {section!r} list is {found}")
        for n, entry in enumerate(data[section]):
            if not isinstance(entry, dict):
                raise _MalformedCoco(f"{section}[{n}] is {_json_type(entry)}, not an object")
            missing = [f for f in fields if f not in entry]
            if missing:
                raise _MalformedCoco(f"{section}[{n}] has no {missing[0]!r}")
        entries[section] = data[section]
    return entries


def _coco_index(entries: list[dict[str, Any]], section: str) -> dict[int | str, int]:
    """Position of each entry by its id; ids are integers (or all text), each listed once."""
    index: dict[int | str, int] = {}
    for n, entry in enumerate(entries):
        if not _is_id(entry["id"]):
            raise _MalformedCoco(f"{section}[{n}] has id {_short(entry['id'])}, not an integer")
        if index and type(entry["id"]) is not type(first := next(iter(index))):
            raise _MalformedCoco(f"{section}[{n}] has id {entry['id']!r} and {section}[0] {first!r}: mixed id types")
        if entry["id"] in index:
            raise _MalformedCoco(f"{section}[{n}] repeats the id {entry['id']!r} of {section}[{index[entry['id']]}]")
        index[entry["id"]] = n
    return index


def _coco_parse(
    data: object,
) -> tuple[list[str], list[np.ndarray], list[np.ndarray], list[np.ndarray], list[str]]:
    """Files, boxes (xyxy, clipped to the image; empty ones left out as torchvision's COCO reference does),
    labels 1..C in category id order, crowd flags and class names of a parsed instances JSON."""
    entries = _coco_entries(data)
    images, categories = entries["images"], entries["categories"]
    image_at, category_at = _coco_index(images, "images"), _coco_index(categories, "categories")
    for n, im in enumerate(images):
        if not isinstance(im["file_name"], str) or not im["file_name"]:
            raise _MalformedCoco(f"images[{n}] has file_name {_short(im['file_name'])}, not a file name")
        for key in ("width", "height"):
            if (_finite(im[key]) or 0) <= 0:
                raise _MalformedCoco(f"images[{n}] has {key} {_short(im[key])}, not a positive number")
    for n, category in enumerate(categories):
        if not isinstance(category["name"], str):
            raise _MalformedCoco(f"categories[{n}] has name {_short(category['name'])}, not text")
    order = sorted(category_at)
    label_of = {category_id: k + 1 for k, category_id in enumerate(order)}
    rows: list[list[tuple[list[float], int, int]]] = [[] for _ in images]
    for n, ann in enumerate(entries["annotations"]):
        image_id, category_id, bbox = ann["image_id"], ann["category_id"], ann["bbox"]
        if not _is_id(image_id) or image_id not in image_at:
            raise _MalformedCoco(f"annotations[{n}] has image_id {_short(image_id)}, not an id in images")
        if not _is_id(category_id) or category_id not in label_of:
            raise _MalformedCoco(f"annotations[{n}] has category_id {_short(category_id)}, not an id in categories")
        xywh = [_finite(v) for v in bbox] if isinstance(bbox, list) else []
        if len(xywh) != 4 or None in xywh:
            raise _MalformedCoco(f"annotations[{n}] has bbox {_short(bbox)}, not finite [x, y, width, height]")
        crowd = ann.get("iscrowd", 0)
        if not isinstance(crowd, int | float) or crowd not in (0, 1):
            raise _MalformedCoco(f"annotations[{n}] has iscrowd {_short(crowd)}, not 0 or 1")
        rows[image_at[image_id]].append((xywh, label_of[category_id], int(crowd)))
    files, boxes, labels, crowds = [], [], [], []
    for n in sorted(range(len(images)), key=lambda k: images[k]["id"]):
        im = images[n]
        xywh = np.array([r[0] for r in rows[n]], dtype=np.float32).reshape(-1, 4)
        corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        size = np.array([im["width"], im["height"]] * 2, dtype=np.float32)
        image_boxes = np.clip(corners, 0, size)
        keep = _valid(image_boxes)
        files.append(im["file_name"])
        boxes.append(image_boxes[keep])
        labels.append(np.array([r[1] for r in rows[n]], dtype=np.int64).reshape(-1)[keep])
        crowds.append(np.array([r[2] for r in rows[n]], dtype=np.int64).reshape(-1)[keep])
    return files, boxes, labels, crowds, [categories[category_at[c]]["name"] for c in order]


def _coco(root: Path, split: str) -> DetectionDataset:
    path = root / "annotations" / f"instances_{split}.json"
    if not path.is_file():
        raise UserError(f"no COCO annotations {path}; {_COCO_HINT}")
    image_dir = next((d for d in (root / split, root / "images" / split) if d.is_dir()), None)
    if image_dir is None:
        raise UserError(f"no COCO image folder {root / split}/ or {root / 'images' / split}/; {_COCO_HINT}")
    try:
        try:
            data = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _MalformedCoco(f"not JSON: {err}") from None
        except RecursionError:
            raise _MalformedCoco("not JSON: nested too deeply") from None
        files, boxes, labels, crowd, names = _coco_parse(data)
    except _MalformedCoco as err:
        raise UserError(
            f"malformed COCO annotations {shown(path)}: {err}; restore the original file or fix the tool that wrote it"
        ) from None
    _check_images(image_dir, files, path, _COCO_HINT)
    return DetectionDataset(image_dir, files, boxes, labels, crowd, names)


# ----------------------------------------------------------------------------------------------------------
# Penn-Fudan pedestrians: root/PNGImages/<name>.png, root/PedMasks/<name>_mask.png (0 background, 1..K people)

_PENNFUDAN_HINT = "set eval.detection.root=DIR to the PennFudanPed folder holding PNGImages/ and PedMasks/"


def _mask_boxes(path: Path) -> np.ndarray:
    """One box per instance id of an instance mask, around its pixels (pixel edges: max index + 1)."""
    if not path.is_file():
        raise UserError(f"missing Penn-Fudan mask {path}; {_PENNFUDAN_HINT}")
    try:
        mask = read_image(str(path), rgb=False)[0]
    except UndecodableImage as err:
        raise UserError(f"cannot decode mask {shown(path)} ({err}); remove or replace the file") from None
    ids = mask.unique()
    ids = ids[ids != 0]
    boxes = masks_to_boxes(mask[None] == ids[:, None, None]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    return boxes.numpy().astype(np.float32)


def pennfudan_split(names: Sequence[str], split: str) -> list[str]:
    """The last PENNFUDAN_TEST_IMAGES names in sorted order are `test` (the last half if there are fewer
    than twice that many), the rest `train`."""
    names = sorted(names)
    n_test = min(PENNFUDAN_TEST_IMAGES, len(names) // 2)
    return names[len(names) - n_test :] if split == "test" else names[: len(names) - n_test]


def _pennfudan(root: Path, split: str) -> DetectionDataset:
    if split not in ("train", "test"):
        raise UserError(
            f"Penn-Fudan has splits train and test, not {split!r}; set eval.detection.train_split=train "
            "eval.detection.test_split=test"
        )
    image_dir = root / "PNGImages"
    if not image_dir.is_dir():
        raise UserError(f"no Penn-Fudan images in {image_dir}/; {_PENNFUDAN_HINT}")
    names = pennfudan_split([f for f in os.listdir(image_dir) if f.lower().endswith(".png")], split)
    if not names:
        raise UserError(f"too few .png images in {image_dir}/ for a train and a test split; {_PENNFUDAN_HINT}")
    boxes = [_mask_boxes(root / "PedMasks" / f"{Path(n).stem}_mask.png") for n in names]
    labels = [np.ones(len(b), dtype=np.int64) for b in boxes]
    crowd = [np.zeros(len(b), dtype=np.int64) for b in boxes]
    return DetectionDataset(image_dir, names, boxes, labels, crowd, ["person"])


# ----------------------------------------------------------------------------------------------------------

_READERS: dict[str, Callable[[Path, str], DetectionDataset]] = {"voc": _voc, "coco": _coco, "pennfudan": _pennfudan}
_DEFAULT_FOLDERS = {"voc": "VOCdevkit/VOC2007", "coco": "coco", "pennfudan": "PennFudanPed"}


DETECTION_FORMATS = tuple(_READERS)


def check_format(fmt: str) -> None:
    if fmt not in _READERS:
        raise UserError(f"unknown detection format {fmt!r}; set eval.detection.format to one of {', '.join(_READERS)}")


def default_detection_root(fmt: str, data_root: str | Path) -> Path:
    """Where a format's data lives when eval.detection.root is not set: a conventional folder of data.root."""
    check_format(fmt)
    return Path(data_root).expanduser() / _DEFAULT_FOLDERS[fmt]


def build_detection_dataset(fmt: str, root: str | Path, split: str) -> DetectionDataset:
    """Split `split` of a detection dataset in format `fmt` (voc, coco, pennfudan) stored at `root`."""
    check_format(fmt)
    return _READERS[fmt](Path(root).expanduser(), split)
