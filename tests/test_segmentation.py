"""VOC 2012 segmentation transfer: the on-disk formats, known-answer scores, output strides, training, resume."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
import torchvision.models as tvm
from fixtures_segmentation import SBD_TRAIN, SBD_VAL, VOC_TRAIN, VOC_VAL, H, W, image_of, write_png_mask, write_voc
from PIL import Image
from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_jaccard_index

import selfsup.eval.segmentation as segmentation
from selfsup.config import load_config
from selfsup.data.segmentation import IGNORE_INDEX, VOC_CLASSES, TrainTransform, read_mask, voc_segmentation
from selfsup.errors import UserError
from selfsup.eval.finetuning import step
from selfsup.eval.segmentation import (
    build_optimizer,
    build_segmentation_model,
    dilate_resnet,
    run,
    segmentation_loss,
    segmentation_scores,
)
from selfsup.eval.transfer import TransferJob
from selfsup.nets.backbones import build_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    root = tmp_path_factory.mktemp("data")
    return root, write_voc(root)


@pytest.fixture(scope="module")
def base_cfg():
    overrides = ["data=synthetic", "eval.segmentation.crop_size=32", "eval.segmentation.batch_size=2"]
    return load_config(overrides + ["eval.segmentation.epochs=1", "eval.segmentation.num_workers=0"])


def voc_root(root: Path) -> Path:
    return root / "VOCdevkit" / "VOC2012"


def sbd_root(root: Path) -> Path:
    return root / "benchmark_RELEASE" / "dataset"


# ----------------------------------------------------------------------------------------------------------
# Reading the formats


def test_palette_png_reads_class_indices_not_colours(data):
    root, written = data
    png = voc_root(root) / "SegmentationClass" / f"{VOC_TRAIN[0]}.png"
    with Image.open(png) as image:  # the fixture is a real VOC mask: palette mode, boundary drawn (224, 224, 192)
        assert image.mode == "P"
        y, x = np.argwhere(written["png"][VOC_TRAIN[0]] == IGNORE_INDEX)[0]
        assert image.convert("RGB").getpixel((int(x), int(y))) == (224, 224, 192)
    dataset = voc_segmentation(voc_root(root), "train")
    assert len(dataset) == len(VOC_TRAIN)
    for index, i in enumerate(VOC_TRAIN):
        image, mask = dataset[index]
        assert image.dtype == torch.uint8 and image.shape == (3, H, W)
        assert mask.dtype == torch.int64 and mask.shape == (H, W)
        assert torch.equal(mask, torch.from_numpy(written["png"][i]).long())
        original = torch.from_numpy(image_of(written["png"][i])).permute(2, 0, 1).float()
        assert (image.float() - original).abs().mean() < 8  # JPEG at quality 95


def test_train_aug_merges_sbd_without_voc_val(data):
    root, written = data
    dataset = voc_segmentation(voc_root(root), "train_aug", sbd_root(root))
    expected = sorted(set(VOC_TRAIN + SBD_TRAIN + SBD_VAL) - set(VOC_VAL))
    assert [Path(p.decode()).stem for p in dataset.images] == expected
    masks = {Path(p.decode()).stem: dataset[k][1] for k, p in enumerate(dataset.images)}
    for i in expected:
        source = "png" if i in VOC_TRAIN else "mat"  # the VOC PNG wins for ids in both
        assert torch.equal(masks[i], torch.from_numpy(written[source][i]).long()), i
    assert not torch.equal(masks["2007_000039"], torch.from_numpy(written["mat"]["2007_000039"]).long())


def test_malformed_masks_are_user_errors(tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.fromarray(image_of(np.zeros((4, 4), np.uint8))).save(rgb)
    with pytest.raises(UserError, match="palette PNGs"):
        read_mask(str(rgb))
    out_of_range = tmp_path / "30.png"
    write_png_mask(out_of_range, np.full((4, 4), 30, np.uint8))
    with pytest.raises(UserError, match="pixel value 30"):
        read_mask(str(out_of_range))
    no_struct = tmp_path / "x.mat"
    scipy.io.savemat(no_struct, {"GTinst": {"Segmentation": np.zeros((4, 4), np.uint8)}})
    with pytest.raises(UserError, match="malformed SBD mask.*sbd_root="):
        read_mask(str(no_struct))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read mask"):
        read_mask(str(tmp_path / "broken.png"))


def test_missing_paths_name_the_fix(data, tmp_path, base_cfg):
    root, _ = data
    with pytest.raises(UserError, match=r"no VOC 2012 segmentation in .*set eval.segmentation.root="):
        voc_segmentation(tmp_path / "nowhere", "train")
    with pytest.raises(UserError, match=r"test.txt.*eval.segmentation.root="):
        voc_segmentation(voc_root(root), "test")
    with pytest.raises(UserError, match="train_aug needs SBD.*eval.segmentation.sbd_root="):
        voc_segmentation(voc_root(root), "train_aug")
    with pytest.raises(UserError, match="no SBD in"):
        voc_segmentation(voc_root(root), "train_aug", tmp_path / "nowhere")
    partial = tmp_path / "partial"
    write_voc(partial)
    (voc_root(partial) / "JPEGImages" / f"{VOC_TRAIN[1]}.jpg").unlink()
    with pytest.raises(UserError, match=f"JPEGImages/{VOC_TRAIN[1]}.jpg"):
        voc_segmentation(voc_root(partial), "train")
    (voc_root(partial) / "SegmentationClass" / f"{VOC_VAL[0]}.png").unlink()
    with pytest.raises(UserError, match=f"SegmentationClass/{VOC_VAL[0]}.png"):
        voc_segmentation(voc_root(partial), "val")
    cfg = copy.deepcopy(base_cfg)
    cfg.data.root = str(tmp_path / "empty")  # the default root: <data root>/VOCdevkit/VOC2012
    backbone, dim = build_backbone("resnet18")
    job = TransferJob(cfg, backbone, dim, torch.device("cpu"), tmp_path / "state.pt", progress=False)
    with pytest.raises(UserError, match=f"{tmp_path / 'empty' / 'VOCdevkit' / 'VOC2012'}.*eval.segmentation.root="):
        run(job)


def test_train_transform_pads_with_ignore_and_crops():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 12, 20), dtype=torch.uint8)
    mask = torch.randint(0, 21, (12, 20), dtype=torch.uint8)
    out_image, out_mask = TrainTransform(32, scale=(1.0, 1.0), flip_p=0.0)(image, mask)
    assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
    assert torch.equal(out_mask[:12, :20], mask) and torch.equal(out_image[:, :12, :20], image)
    assert (out_mask[12:] == IGNORE_INDEX).all() and (out_image[:, :, 20:] == 0).all()
    for _ in range(5):  # rescaled masks keep their labels (nearest), never blends of them
        _, scaled = TrainTransform(16)(image, mask)
        assert scaled.shape == (16, 16) and set(scaled.unique().tolist()) <= set(mask.unique().tolist()) | {255}


# ----------------------------------------------------------------------------------------------------------
# Scores


def test_miou_known_answer():
    # pixel:     1  2  3  4  5  6  7 (ignored)
    target = torch.tensor([0, 0, 1, 1, 1, 1, 255])
    pred = torch.tensor([0, 1, 0, 1, 1, 1, 0])
    # class 0: hits {1}, union {1, 2, 3} -> 1/3; class 1: hits {4, 5, 6}, union {2..6} -> 3/5; 19 classes absent.
    confusion = multiclass_confusion_matrix(pred, target, num_classes=21, ignore_index=255)
    scores = segmentation_scores(confusion)
    assert scores["iou"]["background"] == pytest.approx(100 / 3)
    assert scores["iou"]["aeroplane"] == pytest.approx(60.0)
    assert scores["iou"]["tvmonitor"] is None and scores["classes_scored"] == 2
    assert scores["miou"] == pytest.approx((100 / 3 + 60) / 2)
    assert scores["pixel_acc"] == pytest.approx(100 * 4 / 6)
    reference = multiclass_jaccard_index(pred, target, num_classes=21, ignore_index=255, average="none")
    assert reference[:2].tolist() == pytest.approx([1 / 3, 3 / 5])


def test_perfect_prediction_scores_100_and_predicted_only_classes_count_0():
    target = torch.randint(0, 21, (2, 8, 8))
    target[:, 0] = 255
    pred = target.clamp(max=20)
    perfect = segmentation_scores(multiclass_confusion_matrix(pred, target, num_classes=21, ignore_index=255))
    assert perfect["miou"] == pytest.approx(100.0) and perfect["pixel_acc"] == pytest.approx(100.0)
    target = torch.zeros(4, dtype=torch.long)
    pred = torch.tensor([0, 0, 0, 5])  # class 5 only predicted: IoU 0, counted
    scores = segmentation_scores(multiclass_confusion_matrix(pred, target, num_classes=21))
    assert scores["iou"]["bottle"] == 0.0 and scores["miou"] == pytest.approx((75 + 0) / 2)
    with pytest.raises(UserError, match="no labeled pixels"):
        segmentation_scores(torch.zeros(21, 21, dtype=torch.long))


# ----------------------------------------------------------------------------------------------------------
# Model


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride(output_stride):
    backbone, _ = build_backbone("resnet18", cifar_stem=False)
    model = build_segmentation_model(backbone, "fcn", output_stride).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert model.backbone(x)["out"].shape == (1, 512, 64 // output_stride, 96 // output_stride)
        assert model(x)["out"].shape == (1, 21, 64, 96)
    cifar, _ = build_backbone("resnet18", cifar_stem=True)  # no stride before layer1: 4x finer
    x = torch.randn(1, 3, 16, 32)
    with torch.no_grad():
        features = build_segmentation_model(cifar, "fcn", output_stride).eval().backbone(x)["out"]
    assert features.shape[-2:] == (16 * 4 // output_stride, 32 * 4 // output_stride)


def test_dilation_matches_torchvision_and_keeps_weights():
    backbone, _ = build_backbone("resnet50")
    reference = tvm.resnet50(replace_stride_with_dilation=[False, True, True])
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(backbone.state_dict())
    ours = dilate_resnet(backbone, 8)
    for (name, conv), ref in zip(ours.named_modules(), reference.modules(), strict=True):
        if isinstance(conv, torch.nn.Conv2d):
            assert (conv.stride, conv.dilation, conv.padding) == (ref.stride, ref.dilation, ref.padding), name
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), reference.eval()(x), atol=1e-5)
        assert torch.equal(dilate_resnet(backbone, 32).eval()(x), backbone.eval()(x))  # 32: the backbone as is
    assert backbone.layer4[0].conv2.stride == (2, 2)  # the job's backbone is left untouched


@pytest.mark.parametrize(
    ("name", "options", "stride"),
    [("vit_tiny", {"image_size": 32, "patch_size": 4}, 4), ("timm:convnext_atto", {}, 32)],
)
def test_other_backbones_segment_from_their_deepest_map(name, options, stride):
    """A ViT's patch grid or a timm CNN's last stage at its own stride; inputs of any size (padded to whole
    patches, logits cropped back)."""
    torch.manual_seed(0)
    backbone, _ = build_backbone(name, **options)
    model = build_segmentation_model(backbone, "deeplabv3", "auto").eval()
    x = torch.randn(1, 3, 37, 50)
    with torch.no_grad():
        assert model(x)["out"].shape == (1, 21, 37, 50)
        (deepest,) = model.backbone(model.backbone.pad(x))[-1:]
    # ViT: 40 x 52 after padding, in 4-px patches; ConvNeXt: 37 x 50 -> 9 x 12 (stem) -> 4 x 6 -> 2 x 3 -> 1 x 1
    assert deepest.shape[-2:] == {"vit_tiny": (10, 13), "timm:convnext_atto": (1, 1)}[name]
    assert model.classifier[0].convs[1][0].dilation == (6 * 16 // stride,) * 2  # ASPP rates scaled to the stride
    with pytest.raises(UserError, match=rf"output_stride=8 dilates a ResNet; .* stride {stride}: set .*=auto"):
        build_segmentation_model(backbone, "fcn", 8)


@pytest.mark.parametrize(("name", "options"), [("resnet18", {}), ("vit_tiny", {"image_size": 32, "patch_size": 4})])
@pytest.mark.parametrize("head", ["fcn", "deeplabv3"])
def test_training_steps_reduce_the_loss(head, name, options, data):
    root, _ = data
    dataset = voc_segmentation(voc_root(root), "train")
    images = torch.stack([dataset[i][0][:, :32, :32] for i in range(2)]).float() / 255
    masks = torch.stack([dataset[i][1][:32, :32] for i in range(2)])
    torch.manual_seed(0)
    backbone, _ = build_backbone(name, **options)
    model = build_segmentation_model(backbone, head, "auto")
    optimizer = build_optimizer(model, lr=0.01, backbone_lr_scale=0.1, momentum=0.9, weight_decay=1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.001, 0.01])
    losses = [step(optimizer, segmentation_loss(model, images, masks)).item() for _ in range(4)]
    assert losses[-1] < 0.8 * losses[0], losses


# ----------------------------------------------------------------------------------------------------------
# End to end


def test_run_trains_saves_each_epoch_and_resumes(data, tmp_path, base_cfg, monkeypatch):
    root, _ = data
    steps = []

    def counted_loss(*args):
        steps.append(1)
        return segmentation_loss(*args)

    monkeypatch.setattr(segmentation, "segmentation_loss", counted_loss)
    cfg = copy.deepcopy(base_cfg)
    cfg.eval.segmentation.root = str(voc_root(root))
    backbone, dim = build_backbone("resnet18")
    state_path = tmp_path / "segmentation-state.pt"

    def job() -> TransferJob:
        return TransferJob(cfg, backbone, dim, torch.device("cpu"), state_path, progress=False)

    first = run(job())
    per_epoch = len(VOC_TRAIN) // 2
    assert len(steps) == per_epoch
    assert torch.load(state_path, weights_only=True)["epoch"] == 1
    assert 0 <= first.metrics["miou"] <= 100 and 0 <= first.metrics["pixel_acc"] <= 100
    assert set(first.extra["iou"]) == set(VOC_CLASSES)
    assert first.dataset["train_size"] == len(VOC_TRAIN) and first.dataset["test_size"] == len(VOC_VAL)
    assert first.params["crop_size"] == 32 and first.params["head"] == "fcn"

    cfg.eval.segmentation.epochs = 2  # continues at epoch 1: one more epoch, not two
    second = run(job())
    assert len(steps) == 2 * per_epoch
    assert torch.load(state_path, weights_only=True)["epoch"] == 2
    assert len(second.extra["train_loss"]) == 2 and second.extra["train_loss"][0] == first.extra["train_loss"][0]
    run(job())  # complete: evaluation only
    assert len(steps) == 2 * per_epoch

    cfg.eval.segmentation.lr = 0.02
    with pytest.raises(UserError, match=r"eval.segmentation.lr=0.01, not 0.02; restore it to resume, or delete"):
        run(job())
