"""benchmarks/compose_detection.py: a COCO-layout detection set of real labelled images pasted on canvases.
Checked through selfsup's own COCO reader: every box holds its source image (up to JPEG loss), labels are the
sources' classes, boxes never overlap, and train and test objects come from their own splits."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data.detection import build_detection_dataset
from selfsup.data.sources import build_dataset
from selfsup.errors import UserError

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "compose_detection.py"


@pytest.fixture(scope="module")
def compose():
    spec = importlib.util.spec_from_file_location("compose_detection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compose


def _luma(image: torch.Tensor) -> torch.Tensor:
    """JPEG keeps luma at full resolution (colour is subsampled 2x), so that is where pixels are compared."""
    return torch.tensordot(torch.tensor([0.299, 0.587, 0.114]), image.float(), dims=1)


def _resized(image: torch.Tensor, side: int) -> torch.Tensor:
    pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((side, side), Image.BICUBIC)
    return _luma(torch.from_numpy(np.array(pil)).permute(2, 0, 1))


def test_composed_boxes_hold_their_source_images(tmp_path: Path, compose) -> None:
    out = compose(["data=synthetic", f"out={tmp_path}", "canvas=96", "train=12", "test=5", "seed=1"])
    for split, count in (("train", 12), ("test", 5)):
        det = build_detection_dataset("coco", out, split)
        source = build_dataset("synthetic", None, split)
        anns = json.loads((out / "annotations" / f"instances_{split}.json").read_text())["annotations"]
        assert len(det) == count and det.class_names == source.classes
        used = [a["source_index"] for a in anns]
        assert len(set(used)) == len(used)  # each source image at most once per split
        row = 0
        for i in range(count):
            image, target = det[i]
            boxes = target["boxes"]
            assert image.shape == (3, 96, 96) and 1 <= len(boxes) <= 3
            assert boxes.min() >= 0 and boxes.max() <= 96
            sides = boxes[:, 2:] - boxes[:, :2]
            assert torch.equal(sides[:, 0], sides[:, 1]) and sides.min() >= 32 and sides.max() <= 64
            for a in range(len(boxes)):
                for b in range(a + 1, len(boxes)):
                    x1, y1 = torch.maximum(boxes[a, :2], boxes[b, :2])
                    x2, y2 = torch.minimum(boxes[a, 2:], boxes[b, 2:])
                    assert x2 <= x1 or y2 <= y1  # no overlap
            for box, label in zip(boxes.int().tolist(), target["labels"].tolist(), strict=True):
                src_image, src_label = source[used[row]]
                other_image, _ = source[(used[row] + 1) % len(source)]
                row += 1
                assert label == src_label + 1
                x1, y1, x2, y2 = box
                crop = _luma(image[:, y1:y2, x1:x2])
                error = (crop - _resized(src_image, x2 - x1)).abs().mean()
                assert error < 3, error  # JPEG quality 95
                assert (crop - _resized(other_image, x2 - x1)).abs().mean() > 4 * error
        assert row == len(anns)


def test_compose_refuses_what_cannot_be_made(tmp_path: Path, compose) -> None:
    with pytest.raises(UserError, match="canvas=48 is smaller than the largest object"):
        compose(["data=synthetic", f"out={tmp_path}", "canvas=48"])
    with pytest.raises(UserError, match="lower it"):
        compose(["data=synthetic", f"out={tmp_path}", "test=400"])
    with pytest.raises(UserError, match="expected key=value"):
        compose(["synthetic"])
