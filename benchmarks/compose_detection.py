"""A detection set of real objects, composed from a labelled image dataset, in COCO layout.

No detection dataset is on the CPU machines (VOC and COCO are not in ../shared/data), but real labelled
images are. This pastes 1 to `max_objects` of them, each scaled by a random factor in [min_scale, max_scale],
at random non-overlapping places on a canvas whose background is a random image of the same split blown up to
the canvas and blurred, so it has natural colours and no object edges. A box is the pasted rectangle and its
class the image's label. Train canvases use only train-split images and test canvases only test-split images,
each as an object at most once, so no object is seen in both.

Output (what `eval.detection.format=coco eval.detection.root=OUT` reads, and `data=folder data.root=OUT/train`
pretrains on):

    OUT/annotations/instances_{train,test}.json   COCO instances; each annotation also names its
                                                  `source_index` in the dataset's split
    OUT/{train,test}/000000.jpg ...               canvases, JPEG quality 95

    SELFSUP_DATA=../shared/data python benchmarks/compose_detection.py data=cifar10 out=output/cifar10-detection
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from selfsup.config import load_config
from selfsup.data.sources import build_dataset
from selfsup.errors import UserError

DEFAULTS = {
    "data": "cifar10",  # a selfsup data group with labels
    "out": "output/cifar10-detection",
    "canvas": 128,  # canvas side in pixels
    "train": 1000,  # canvases per split
    "test": 300,
    "max_objects": 3,
    "min_scale": 1.0,  # object side = source side x a factor in [min_scale, max_scale]
    "max_scale": 2.0,
    "blur": 4.0,  # Gaussian radius of the background blur, in canvas pixels
    "seed": 0,
}
PLACEMENT_TRIES = 50


def _parse(args: list[str]) -> tuple[dict[str, object], list[str]]:
    """This script's keys (DEFAULTS) and the rest, which go to selfsup's config (data.root=..., data.subset=...)."""
    settings: dict[str, object] = dict(DEFAULTS)
    rest = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise UserError(f"expected key=value, got {arg!r}")
        if key in DEFAULTS:
            default = DEFAULTS[key]
            settings[key] = type(default)(value) if not isinstance(default, str) else value
        else:
            rest.append(arg)
    return settings, rest


def _place(rng: np.random.Generator, sides: list[int], canvas: int) -> list[tuple[int, int, int, int]]:
    """Boxes (x1, y1, x2, y2) for squares of these sides at random places, none overlapping another; a square
    that finds no free place in PLACEMENT_TRIES draws is left out (the first always fits)."""
    boxes: list[tuple[int, int, int, int]] = []
    for side in sides:
        for _ in range(PLACEMENT_TRIES):
            x, y = (int(v) for v in rng.integers(0, canvas - side + 1, 2))
            if all(x + side <= bx1 or bx2 <= x or y + side <= by1 or by2 <= y for bx1, by1, bx2, by2 in boxes):
                boxes.append((x, y, x + side, y + side))
                break
    return boxes


def _as_pil(item: object) -> Image.Image:
    image, _ = item
    return Image.fromarray(image.permute(1, 2, 0).numpy())


def compose_split(dataset, count: int, out: Path, split: str, settings: dict, rng: np.random.Generator) -> dict:
    """Write `count` canvases of split `split` under out/split/ and return their COCO instances dict."""
    canvas, source_side = int(settings["canvas"]), int(dataset[0][0].shape[-1])
    max_side = int(round(source_side * float(settings["max_scale"])))
    if max_side > canvas:
        raise UserError(f"canvas={canvas} is smaller than the largest object ({max_side} px); raise canvas")
    order = rng.permutation(len(dataset))  # objects: each image at most once
    needed = count * int(settings["max_objects"])
    if needed > len(order):
        raise UserError(f"{split}={count} canvases may need {needed} images, the split has {len(order)}; lower it")
    (out / split).mkdir(parents=True, exist_ok=True)
    images, annotations, cursor = [], [], 0
    blur = ImageFilter.GaussianBlur(float(settings["blur"]))
    for image_id in range(count):
        background = _as_pil(dataset[int(rng.integers(len(dataset)))]).resize((canvas, canvas), Image.BILINEAR)
        background = background.filter(blur)
        n = int(rng.integers(1, int(settings["max_objects"]) + 1))
        scales = rng.uniform(float(settings["min_scale"]), float(settings["max_scale"]), n)
        sides = [int(round(source_side * s)) for s in scales]
        boxes = _place(rng, sides, canvas)
        for x1, y1, x2, y2 in boxes:
            index = int(order[cursor])
            cursor += 1
            background.paste(_as_pil(dataset[index]).resize((x2 - x1, y2 - y1), Image.BICUBIC), (x1, y1))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(dataset.labels[index]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "source_index": index,
                }
            )
        name = f"{image_id:06d}.jpg"
        background.save(out / split / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": canvas, "height": canvas})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def compose(args: list[str]) -> Path:
    settings, overrides = _parse(args)
    cfg = load_config([f"data={settings['data']}", *overrides])
    out = Path(str(settings["out"]))
    rng = np.random.default_rng(int(settings["seed"]))
    for split, source_split in (("train", cfg.data.train_split), ("test", cfg.data.test_split)):
        dataset = build_dataset(cfg.data.name, cfg.data.root, source_split)
        if not dataset.classes:
            raise UserError(f"data={cfg.data.name} has no labels to name the objects; use a labelled dataset")
        instances = compose_split(dataset, int(settings[split]), out, split, settings, rng)
        instances["info"] = {
            "description": f"{cfg.data.name} {source_split} images composed by benchmarks/compose_detection.py",
            "settings": settings,
        }
        (out / "annotations").mkdir(parents=True, exist_ok=True)
        path = out / "annotations" / f"instances_{split}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(instances))
        os.replace(tmp, path)
        print(f"{path}: {len(instances['images'])} images, {len(instances['annotations'])} objects")
    return out


if __name__ == "__main__":
    try:
        compose(sys.argv[1:])
    except UserError as err:
        sys.exit(f"error: {err}")
