"""Pascal VOC 2012 semantic segmentation, optionally with SBD's extra masks (the `train_aug` list).

On disk (VOCdevkit/VOC2012): `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` and the id lists
`ImageSets/Segmentation/{train,val,trainval}.txt`. The masks are palette ('P') PNGs whose pixel values are the
class indices (0 background, 1..20 the objects, 255 the unlabeled object boundaries); their colours are only a
rendering, so the index values are read, never the RGB. SBD (Hariharan et al. 2011, `benchmark_RELEASE/dataset`)
adds `cls/<id>.mat` MATLAB files whose struct `GTcls` holds the mask in `Segmentation`, and `train.txt` /
`val.txt`. Every SBD image is also in VOC 2012's JPEGImages, which is where all images are read from.

`train_aug` is the list of DeepLab (Chen et al. 2015) and every SSL segmentation transfer since: VOC train +
SBD train + SBD val, minus the VOC val ids (10,582 images on the full data). An id with both masks uses the VOC
PNG, the finer annotation with boundaries marked 255.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from selfsup.data.detection import VOC_CLASSES as VOC_OBJECT_CLASSES
from selfsup.data.images import PNG_ERRORS, UndecodableImage, first_line, read_image, read_text_list, shown
from selfsup.data.matfile import read_mat
from selfsup.errors import UserError

VOC_CLASSES = ("background", *VOC_OBJECT_CLASSES)  # index = the mask value
IGNORE_INDEX = 255
TRAIN_AUG = "train_aug"

_VOC_HINT = "set eval.segmentation.root=.../VOCdevkit/VOC2012 (the VOC 2012 trainval tar, unpacked)"
_SBD_HINT = "set eval.segmentation.sbd_root=.../benchmark_RELEASE/dataset (SBD, for train_list=train_aug)"

JointTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class VOCSegmentation(Dataset):
    """Pairs (image uint8 [3, H, W], mask int64 [H, W] with 0..20 and 255 = ignore), read from files.

    Paths are kept as numpy bytes arrays rather than lists of str, so DataLoader workers do not copy the pages
    holding them (as in selfsup.data.sources.ImageDataset). `transform` acts on image and mask together.
    """

    def __init__(self, images: Sequence[str], masks: Sequence[str], transform: JointTransform | None = None) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = np.array([os.fsencode(p) for p in images], dtype=np.bytes_)
        self.masks = np.array([os.fsencode(p) for p in masks], dtype=np.bytes_)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = os.fsdecode(self.images[index]), os.fsdecode(self.masks[index])
        image, mask = read_rgb(image_path), read_mask(mask_path)
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise UserError(
                f"{mask_path} is {tuple(mask.shape)} but its image {image_path} is {tuple(image.shape[1:])}; "
                "replace the mismatched file"
            )
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask.long()


def read_rgb(path: str) -> Tensor:
    """A JPEG as uint8 [3, H, W] RGB."""
    try:
        return read_image(path)
    except UndecodableImage as err:
        raise UserError(f"cannot decode image {shown(path)} ({err}); remove or replace the file") from None


def read_mask(path: str) -> Tensor:
    """A VOC PNG or SBD .mat mask as uint8 [H, W] class indices; rejects anything outside 0..20 and 255."""
    array = _read_mat_mask(path) if path.endswith(".mat") else _read_png_mask(path)
    if array.ndim != 2 or array.dtype.kind not in "iu":
        raise UserError(f"{path} holds a {array.dtype} array of shape {array.shape}, not a 2-D mask of class indices")
    bad = ((array >= len(VOC_CLASSES)) & (array != IGNORE_INDEX)) | (array < 0)
    if bad.any():
        raise UserError(
            f"{path} has pixel value {array[bad][0]}, not a class index 0..{len(VOC_CLASSES) - 1} or "
            f"{IGNORE_INDEX}; use the original masks"
        )
    return torch.from_numpy(array.astype(np.uint8))


def _read_png_mask(path: str) -> np.ndarray:
    """The index values of a palette PNG (PIL keeps mode P, so np.array gives indices, not colours)."""
    try:
        with Image.open(path, formats=["PNG"]) as image:
            if image.mode not in ("P", "L"):
                raise UserError(
                    f"{shown(path)} is a mode {image.mode} image; VOC masks are palette PNGs whose values are class "
                    "indices: use the original SegmentationClass files, not colour renderings"
                )
            return np.array(image)
    except UnidentifiedImageError:
        reason = "not a readable PNG: its header is damaged"
        raise UserError(f"cannot read mask {shown(path)} ({reason}); replace the file") from None
    except PNG_ERRORS as err:
        reason = f"damaged or truncated PNG: {first_line(err)}"
        raise UserError(f"cannot read mask {shown(path)} ({reason}); replace the file") from None


def _read_mat_mask(path: str) -> np.ndarray:
    """SBD's `GTcls.Segmentation` (a 1x1 MATLAB struct), read like torchvision's SBDataset."""
    try:
        return np.asarray(read_mat(Path(path))["GTcls"]["Segmentation"][0, 0])
    except Exception as err:  # scipy raises many types (MatReadError, ValueError, ...) on damaged files
        reason = f"{type(err).__name__}: {first_line(err)}"
        raise UserError(f"malformed SBD mask {shown(path)} ({reason}); {_SBD_HINT}") from err


def _read_ids(path: Path, hint: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"missing id list {path}; {hint}")
    ids = [line.strip() for line in read_text_list(path).splitlines() if line.strip()]
    if not ids:
        raise UserError(f"id list {path} is empty; {hint}")
    return ids


def _stems(folder: Path, suffix: str, hint: str) -> set[str]:
    """Ids with a `<id><suffix>` file in `folder`: one directory scan instead of a stat per id."""
    if not folder.is_dir():
        raise UserError(f"missing folder {folder}; {hint}")
    return {e.name[: -len(suffix)] for e in os.scandir(folder) if e.name.endswith(suffix)}


def _mask_paths(root: Path, ids: Sequence[str], sbd_root: Path | None) -> list[str]:
    """VOC PNG where one exists, else (train_aug only) SBD's .mat; names the first id that has neither."""
    png = _stems(root / "SegmentationClass", ".png", _VOC_HINT)
    mat = _stems(sbd_root / "cls", ".mat", _SBD_HINT) if sbd_root is not None else set()
    missing = [i for i in ids if i not in png and i not in mat]
    if missing:
        where = root / "SegmentationClass" / f"{missing[0]}.png"
        hint = _VOC_HINT if sbd_root is None else f"{_VOC_HINT}; or {_SBD_HINT} (no {sbd_root}/cls/{missing[0]}.mat)"
        raise UserError(f"{len(missing)} listed ids have no mask, e.g. {where}; {hint}")
    return [
        str(root / "SegmentationClass" / f"{i}.png") if i in png else str(sbd_root / "cls" / f"{i}.mat") for i in ids
    ]


def train_aug_ids(root: Path, sbd_root: Path) -> list[str]:
    """VOC train + SBD train + SBD val, minus VOC val, sorted."""
    voc = root / "ImageSets" / "Segmentation"
    ids = set(_read_ids(voc / "train.txt", _VOC_HINT))
    ids |= set(_read_ids(sbd_root / "train.txt", _SBD_HINT)) | set(_read_ids(sbd_root / "val.txt", _SBD_HINT))
    return sorted(ids - set(_read_ids(voc / "val.txt", _VOC_HINT)))


def voc_segmentation(
    root: str | Path, split: str, sbd_root: str | Path | None = None, transform: JointTransform | None = None
) -> VOCSegmentation:
    """The ids of `ImageSets/Segmentation/<split>.txt`, or of train_aug (which needs `sbd_root`); every listed
    image and mask must exist, so a partial copy fails here rather than mid-training."""
    root = Path(root).expanduser()
    if not (root / "ImageSets" / "Segmentation").is_dir():
        raise UserError(f"no VOC 2012 segmentation in {root} (no ImageSets/Segmentation): {_VOC_HINT}")
    if split == TRAIN_AUG:
        if sbd_root is None:
            raise UserError(f"train_list={TRAIN_AUG} needs SBD's masks: {_SBD_HINT}")
        sbd_root = Path(sbd_root).expanduser()
        if not sbd_root.is_dir():
            raise UserError(f"no SBD in {sbd_root}: {_SBD_HINT}")
        ids = train_aug_ids(root, sbd_root)
    else:
        ids = _read_ids(root / "ImageSets" / "Segmentation" / f"{split}.txt", f"{_VOC_HINT}; or pick another split")
        sbd_root = None
    images = root / "JPEGImages"
    missing = sorted(set(ids) - _stems(images, ".jpg", _VOC_HINT))
    if missing:
        raise UserError(f"{len(missing)} listed images are missing, e.g. {images / missing[0]}.jpg; {_VOC_HINT}")
    return VOCSegmentation([str(images / f"{i}.jpg") for i in ids], _mask_paths(root, ids, sbd_root), transform)


class TrainTransform:
    """DeepLab's VOC training augmentation on (uint8 image, mask): random rescale, pad the bottom/right to
    `crop_size` (image 0, mask 255 so padding is ignored by the loss), random crop, horizontal flip.

    Draws from torch's global RNG, which DataLoader seeds per worker (and the caller per epoch)."""

    def __init__(self, crop_size: int, scale: Sequence[float] = (0.5, 2.0), flip_p: float = 0.5) -> None:
        self.crop_size = crop_size
        self.scale = (float(scale[0]), float(scale[1]))
        self.flip_p = flip_p

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        factor = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(()).item()
        size = [max(1, round(side * factor)) for side in image.shape[-2:]]
        mask = mask[None]  # [1, H, W]: torchvision's tensor kernels expect a channel dimension
        image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        mask = TF.resize(mask, size, interpolation=InterpolationMode.NEAREST)
        pad = [0, 0, max(self.crop_size - size[1], 0), max(self.crop_size - size[0], 0)]
        image, mask = TF.pad(image, pad, fill=0), TF.pad(mask, pad, fill=IGNORE_INDEX)
        top = int(torch.randint(image.shape[-2] - self.crop_size + 1, ()))
        left = int(torch.randint(image.shape[-1] - self.crop_size + 1, ()))
        image = TF.crop(image, top, left, self.crop_size, self.crop_size)
        mask = TF.crop(mask, top, left, self.crop_size, self.crop_size)
        if torch.rand(()).item() < self.flip_p:
            image, mask = TF.horizontal_flip(image), TF.horizontal_flip(mask)
        return image, mask[0]
