"""Batched crops on the device: each crop against torchvision's resized_crop, the boxes against its
RandomResizedCrop sampler, and the in-memory loader against the sampler it follows."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from omegaconf import OmegaConf
from torch.utils.data import Subset

from selfsup.data.batched_crops import BatchCropFlip, random_resized_boxes, resized_crops
from selfsup.data.datasets.synthetic import make_synthetic
from selfsup.data.loader import DeviceCropLoader, device_crop_arrays, shard_sampler
from selfsup.data.sources import ImageDataset
from selfsup.data.views import CropFlip
from selfsup.errors import UserError

RATIO = [3 / 4, 4 / 3]


@pytest.mark.parametrize(("height", "width", "size"), [(32, 32, 32), (32, 32, 16), (40, 30, 24), (96, 96, 64)])
def test_crops_equal_torchvision_resized_crop_up_and_down(height, width, size):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 3, height, width), dtype=torch.uint8)
    boxes = random_resized_boxes(24, height, width, (0.08, 1.0))
    flip = torch.arange(24) % 2 == 0
    out = resized_crops(images, boxes, size, flip)
    assert out.shape == (24, 3, size, size) and out.dtype == torch.float32
    for b in range(24):
        top, left, h, w = boxes[b].tolist()
        ref = TF.resized_crop(images[b].float(), top, left, h, w, [size, size], antialias=True)
        ref_uint8 = TF.resized_crop(images[b], top, left, h, w, [size, size], antialias=True)
        if flip[b]:
            ref, ref_uint8 = ref.flip(-1), ref_uint8.flip(-1)
        torch.testing.assert_close(out[b], ref, atol=5e-3, rtol=0)  # float32 sums of up to 96 taps
        assert (out[b].round() - ref_uint8.float()).abs().max() <= 1  # torchvision's uint8 kernel rounds itself


def test_k_crops_per_image_equal_k_single_crops():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 20, 28), dtype=torch.uint8)
    boxes = random_resized_boxes(6 * 3, 20, 28, (0.08, 1.0)).view(6, 3, 4)
    flip = torch.rand(6, 3) < 0.5
    together = resized_crops(images, boxes, 12, flip)
    assert together.shape == (6, 3, 3, 12, 12)
    for k in range(3):  # each image's k-th crop, alone; different images' pixels never mix
        torch.testing.assert_close(together[:, k], resized_crops(images, boxes[:, k], 12, flip[:, k]))


def test_a_crop_reads_only_its_box():
    images = torch.zeros(1, 1, 8, 8)
    images[..., 2:6, 2:6] = 100.0  # a bright box, dark around it
    out = resized_crops(images, torch.tensor([[2, 2, 4, 4]]), 16)
    assert torch.equal(out, torch.full((1, 1, 16, 16), 100.0))  # upscaling never blends in the border


def test_boxes_stay_inside_the_image_and_follow_torchvision_sampler():
    torch.manual_seed(0)
    for height, width in [(32, 32), (30, 45)]:
        boxes = random_resized_boxes(20000, height, width, (0.08, 1.0))
        top, left, h, w = boxes.T
        assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
        assert (top + h <= height).all() and (left + w <= width).all()
        image = torch.empty(3, height, width)
        ref = torch.tensor([T.RandomResizedCrop.get_params(image, [0.08, 1.0], RATIO) for _ in range(5000)])
        for got, want in zip(boxes.T.double(), ref.T.double(), strict=True):  # top, left, h, w
            tolerance = 4 * math.sqrt(got.var() / got.numel() + want.var() / want.numel())
            assert abs(got.mean() - want.mean()) <= tolerance
        area, ref_area = (h * w).double() / (height * width), (ref[:, 2] * ref[:, 3]).double() / (height * width)
        for q in (0.1, 0.5, 0.9):
            assert abs(area.quantile(q) - ref_area.quantile(q)) <= 0.03


def test_fallback_is_torchvision_central_crop():
    # A 10 x 40 image cannot hold any box of its whole area with aspect ratio in [3/4, 4/3]: every try fails.
    boxes = random_resized_boxes(64, 10, 40, (1.0, 1.0))
    ref = T.RandomResizedCrop.get_params(torch.empty(3, 10, 40), [1.0, 1.0], RATIO)
    assert tuple(ref) == (0, 13, 10, 13)
    assert (boxes == torch.tensor(ref)).all()


def coordinate_images(n: int) -> torch.Tensor:
    idx = torch.arange(32, dtype=torch.uint8) * 8
    rows, cols = idx[:, None].expand(32, 32), idx[None, :].expand(32, 32)
    return torch.stack([rows, cols, torch.zeros_like(rows)]).expand(n, 3, 32, 32).contiguous()


def test_batch_crop_flip_has_cropflip_shapes_and_rates():
    torch.manual_seed(0)
    cfg = {"num": 2, "crop_size": 16, "local_crops": 3, "local_crop_size": 8}
    views, local = BatchCropFlip(cfg)(coordinate_images(5))
    one_views, one_local = CropFlip(cfg)(coordinate_images(1)[0])
    assert views.shape == (5, *one_views.shape) and local.shape == (5, *one_local.shape)
    assert views.dtype == local.dtype == torch.uint8
    assert BatchCropFlip({"num": 2, "crop_size": 16})(coordinate_images(5)).shape == (5, 2, 3, 16, 16)

    whole = BatchCropFlip({"num": 4, "crop_size": 32, "crop_scale": [1.0, 1.0], "flip_p": 0.3})
    crops = whole(coordinate_images(500))  # the whole image, mirrored or not
    image = coordinate_images(1)[0]
    mirrored = (crops == image.flip(-1)).flatten(2).all(2)
    assert ((crops == image).flatten(2).all(2) | mirrored).all()
    rate = mirrored.float().mean().item()
    assert abs(rate - 0.3) <= 4 * math.sqrt(0.3 * 0.7 / mirrored.numel())
    with pytest.raises(ValueError, match="uint8 or float"):
        whole(torch.randint(0, 9, (2, 3, 32, 32)))  # int64 is neither
    with pytest.raises(ValueError, match="uint8 or float"):
        whole(torch.rand(3, 32, 32))  # one image, not a batch


def test_device_loader_follows_the_sampler_and_resumes_mid_epoch():
    dataset = make_synthetic(64, seed=0, side=16)
    sampler = shard_sampler(dataset, 8, seed=3, rank=1, world=2)
    loader = DeviceCropLoader(dataset.images, dataset.labels, BatchCropFlip({"crop_size": 8}), sampler, 8, "cpu")
    assert len(loader) == 4  # 32 images in this process's shard
    sampler.set_position(epoch=2, start=0)
    batches = list(loader)
    order = list(sampler)
    labels = torch.cat([labels for _, labels in batches])
    assert torch.equal(labels, torch.from_numpy(dataset.labels[order]))
    assert all(crops.shape == (8, 2, 3, 8, 8) for crops, _ in batches)
    sampler.set_position(epoch=2, start=16)  # a resumed run: the rest of the same epoch
    assert torch.equal(torch.cat([labels for _, labels in loader]), labels[16:])


def test_crop_on_device_resolution():
    dataset = make_synthetic(20, seed=0, side=16)
    images, labels = device_crop_arrays("auto", dataset, "synthetic")
    assert images is dataset.images and labels is dataset.labels
    assert device_crop_arrays(False, dataset, "synthetic") is None
    sub_images, sub_labels = device_crop_arrays(True, Subset(dataset, [3, 1]), "synthetic")
    assert np.array_equal(sub_images, dataset.images[[3, 1]]) and np.array_equal(sub_labels, dataset.labels[[3, 1]])
    files = ImageDataset(np.zeros(2), ["a"], root="/nowhere", files=["a/1.png", "a/2.png"])
    assert device_crop_arrays("auto", files, "imagefolder") is None
    with pytest.raises(UserError, match="data.crop_on_device=true needs a dataset held in memory"):
        device_crop_arrays(True, files, "imagefolder")
    with pytest.raises(UserError, match="must be auto, true or false"):
        device_crop_arrays("gpu", dataset, "synthetic")


def test_config_checks_the_setting():
    from selfsup.config import load_config

    assert load_config([]).data.crop_on_device == "auto"
    assert OmegaConf.select(load_config(["data.crop_on_device=false"]), "data.crop_on_device") is False
    with pytest.raises(UserError, match="data.crop_on_device"):
        load_config(["data.crop_on_device=gpu"])
