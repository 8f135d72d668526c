"""Detection transfer: VOC / COCO / Penn-Fudan readers on fixtures in the exact on-disk formats, mAP against
hand-computed values, the Faster R-CNN builders (frozen norm, trainable layers, fpn and c4 learning), and
chunked, resumable training through `run`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from fixtures_detection import SIDE, image_with_boxes, write_coco, write_pennfudan, write_voc
from torchvision.ops import FrozenBatchNorm2d

from selfsup.config import load_config
from selfsup.data.detection import VOC_CLASSES, build_detection_dataset, default_detection_root
from selfsup.errors import UserError
from selfsup.eval.detection import build_detector, detection_loss, detection_lr_factor, detection_map, hflip, run
from selfsup.eval.finetuning import step
from selfsup.eval.transfer import TransferJob
from selfsup.nets.backbones import build_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

# Small detector settings: 64-px images, few sampled RoIs and test proposals, so a step takes a fraction of a second.
FAST = [
    "data=synthetic",
    f"eval.detection.min_size={SIDE}",
    f"eval.detection.max_size={SIDE}",
    "eval.detection.roi_batch_size=16",
    "eval.detection.rpn_test_proposals=20",
    "eval.detection.batch_size=2",
    "eval.detection.num_workers=0",
]


# ----------------------------------------------------------------------------------------------------------
# Readers


def test_voc_reads_boxes_labels_and_difficult(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    train = build_detection_dataset("voc", voc, "trainval")
    assert train.class_names == list(VOC_CLASSES) and len(VOC_CLASSES) == 20 and len(train) == 2
    image, target = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, SIDE, SIDE)
    # 1-based inclusive corners (5, 10, 30, 40) -> pixel edges (4, 9, 30, 40)
    assert torch.equal(target["boxes"], torch.tensor([[4.0, 9, 30, 40], [39, 1, 60, 50]]))
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert target["iscrowd"].tolist() == [0, 1] and target["image_id"] == 0  # difficult person: ignored
    gray, target = train[1]
    assert gray.shape == (3, SIDE, SIDE)  # grayscale JPEG read as RGB
    assert target["boxes"].tolist() == [[0, 0, 64, 20]] and target["labels"].tolist() == [7]
    assert train.num_boxes == 2
    test = build_detection_dataset("voc", voc, "test")
    assert test[0][1]["boxes"].tolist() == [[10, 20, 31, 41]] and test[0][1]["labels"].tolist() == [20]


@pytest.mark.parametrize("nested", [False, True])
def test_coco_reads_boxes_with_contiguous_labels(tmp_path: Path, nested: bool) -> None:
    root = write_coco(tmp_path, nested=nested)
    data = build_detection_dataset("coco", root, "val2017")
    assert data.class_names == ["person", "car", "dog"]  # ids 1, 3, 7 -> labels 1, 2, 3
    assert len(data) == 3  # sorted by image id: b (2), empty (5), a (10)
    image, b = data[0]
    assert image.shape == (3, 48, 64)
    assert b["boxes"].tolist() == [[0, 0, 10, 10]] and b["labels"].tolist() == [2]  # degenerate box dropped
    assert data[1][1]["boxes"].shape == (0, 4) and data[1][1]["labels"].shape == (0,)  # kept for evaluation
    a = data[2][1]
    assert a["boxes"].tolist() == [[4.5, 6, 24.5, 16], [50, 40, 64, 48]]  # xywh -> xyxy, clipped to 64x48
    assert a["labels"].tolist() == [3, 1] and a["iscrowd"].tolist() == [0, 1] and a["image_id"] == 2
    assert data.num_boxes == 2


def test_pennfudan_boxes_from_masks_and_deterministic_split(tmp_path: Path) -> None:
    root, boxes = write_pennfudan(tmp_path)
    train = build_detection_dataset("pennfudan", root, "train")
    test = build_detection_dataset("pennfudan", root, "test")
    assert train.class_names == ["person"] and len(train) == 2 and len(test) == 2  # fewer than 100: halves
    assert [f.decode() for f in test.files] == ["FudanPed00003.png", "FudanPed00004.png"]
    for dataset, expected in ((train, boxes[:2]), (test, boxes[2:])):
        for i, image_boxes in enumerate(expected):
            image, target = dataset[i]
            assert image.shape == (3, SIDE, SIDE)
            assert target["boxes"].tolist() == [list(map(float, b)) for b in image_boxes]
            assert target["labels"].tolist() == [1] * len(image_boxes)


def _broken_voc(root: Path) -> Path:
    voc = write_voc(root)
    (voc / "Annotations" / "000001.xml").write_text("<annotation><object><name>dog</name></object>")
    return voc


def _broken_coco(root: Path) -> Path:
    write_coco(root)
    (root / "annotations" / "instances_val2017.json").write_text('{"images": []')
    return root


@pytest.mark.parametrize(
    ("fmt", "make", "split", "message"),
    [
        ("voc", lambda p: p, "trainval", r"no VOC annotations in .*set eval\.detection\.root=.*VOC2007"),
        ("voc", lambda p: write_voc(p).parent, "trainval", r"no VOC annotations in .*VOCdevkit \(expected"),
        ("voc", write_voc, "val", r"missing VOC image list .*val\.txt.*one of: test, trainval"),
        ("voc", _broken_voc, "trainval", r"malformed VOC annotation .*000001\.xml"),
        ("coco", lambda p: p, "val2017", r"no COCO annotations .*instances_val2017\.json.*eval\.detection\.root"),
        ("coco", _broken_coco, "val2017", r"malformed COCO annotations .*instances_val2017\.json"),
        ("pennfudan", lambda p: p, "train", r"no Penn-Fudan images in .*PNGImages.*eval\.detection\.root"),
        ("pennfudan", lambda p: write_pennfudan(p)[0], "trainval", r"splits train and test.*train_split=train"),
        ("yolo", lambda p: p, "train", r"unknown detection format 'yolo'.*voc, coco, pennfudan"),
    ],
)
def test_missing_or_malformed_data_is_a_user_error(tmp_path: Path, fmt, make, split, message) -> None:
    root = make(tmp_path)
    with pytest.raises(UserError, match=message):
        build_detection_dataset(fmt, root, split)


def test_missing_image_and_default_root(tmp_path: Path) -> None:
    voc = write_voc(tmp_path)
    (voc / "JPEGImages" / "000002.jpg").unlink()
    with pytest.raises(UserError, match=r"missing image .*000002\.jpg \(listed in .*trainval\.txt\)"):
        build_detection_dataset("voc", voc, "trainval")
    assert default_detection_root("voc", tmp_path) == voc
    assert default_detection_root("pennfudan", "/data") == Path("/data/PennFudanPed")


# ----------------------------------------------------------------------------------------------------------
# mAP


def _truth(boxes: list[list[float]], labels: list[int], crowd: list[int] | None = None) -> dict:
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if crowd is not None:
        target["iscrowd"] = torch.tensor(crowd)
    return target


def _pred(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict:
    return {**_truth(boxes, labels), "scores": torch.tensor(scores, dtype=torch.float32)}


def test_detection_map_perfect_predictions_score_100() -> None:
    targets = [_truth([[0, 0, 10, 10], [20, 20, 40, 50]], [1, 2]), _truth([[5, 5, 30, 25]], [1])]
    predictions = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    result = detection_map(predictions, targets, ["cat", "dog"])
    for key in ("map", "map_50", "map_75"):
        assert result[key] == pytest.approx(100.0)
    assert result["map_per_class"] == pytest.approx({"cat": 100.0, "dog": 100.0})
    # every box is under 32 x 32 px: AP of small objects only; sizes without ground truth are left out
    assert result["map_small"] == pytest.approx(100.0) and not {"map_medium", "map_large"} & set(result)
    large = [_truth([[0, 0, 10, 10], [0, 0, 200, 100]], [1, 1])]
    missed = detection_map([_pred([[0, 0, 200, 100]], [1], [1.0])], large)  # the large box found, the small not
    assert (missed["map_small"], missed["map_large"]) == pytest.approx((0.0, 100.0))


def test_detection_map_hand_computed_cases() -> None:
    # One of two ground-truth boxes found (exactly): precision 1 up to recall 0.5, then nothing. COCO's
    # 101-point interpolation counts recall thresholds 0, 0.01, ..., 0.50 -> 51 of 101 points at precision 1.
    targets = [_truth([[0, 0, 10, 10]], [1]), _truth([[20, 20, 40, 40]], [1])]
    half = detection_map([_pred([[0, 0, 10, 10]], [1], [1.0]), _pred([], [], [])], targets)
    assert half["map_50"] == pytest.approx(100 * 51 / 101, abs=1e-4)
    assert half["map"] == pytest.approx(100 * 51 / 101, abs=1e-4)  # exact box: the same at every IoU
    # A false positive ranked above the only true positive: precision 1/2 at recall 1 -> AP 50.
    one = [_truth([[0, 0, 10, 10]], [1])]
    ranked = detection_map([_pred([[30, 30, 50, 50], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])], one)
    assert ranked["map_50"] == pytest.approx(50.0, abs=1e-4)
    # A detection of a box marked iscrowd (VOC difficult) is neither a hit nor a false positive.
    crowd = [_truth([[0, 0, 10, 10], [30, 30, 50, 50]], [1, 1], crowd=[0, 1])]
    ignored = detection_map([_pred([[30, 30, 50, 50], [0, 0, 10, 10]], [1, 1], [0.9, 0.8])], crowd)
    assert ignored["map_50"] == pytest.approx(100.0)


# ----------------------------------------------------------------------------------------------------------
# Model and training


def _cfg(*overrides: str):
    return load_config([*FAST, *overrides])


def _backbone(cifar_stem: bool = False) -> nn.Module:
    torch.manual_seed(0)
    # zero-init residuals: a random full-depth ResNet under the frozen random statistics below amplifies its
    # activations block by block until the detector's loss overflows; these tests are about the detector
    backbone, _ = build_backbone("resnet18", cifar_stem=cifar_stem, zero_init_residual=True)
    with torch.no_grad():  # non-default statistics, so copying them is visible
        for m in backbone.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return backbone


@pytest.mark.parametrize("architecture", ["fpn", "c4"])
def test_frozen_norm_and_trainable_layers(architecture: str) -> None:
    det = _cfg(f"eval.detection.architecture={architecture}", "eval.detection.trainable_layers=2").eval.detection
    backbone = _backbone()
    model = build_detector(backbone, 3, det, (0.5,) * 3, (0.25,) * 3)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert isinstance(backbone.bn1, nn.BatchNorm2d)  # the job's backbone is left as it was
    trunk = model.backbone.body if architecture == "fpn" else model.backbone
    assert isinstance(trunk.bn1, FrozenBatchNorm2d)
    assert torch.equal(trunk.layer2[0].bn1.running_var, backbone.layer2[0].bn1.running_var)
    assert torch.equal(trunk.bn1.weight, backbone.bn1.weight.detach())
    layer4 = trunk.layer4 if architecture == "fpn" else model.roi_heads.box_head[0]
    assert all(p.requires_grad for p in layer4.parameters())  # trainable_layers=2: layer4 and layer3
    assert all(p.requires_grad for p in trunk.layer3.parameters())
    for frozen in (trunk.layer2, trunk.layer1, trunk.conv1):
        assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in model.rpn.parameters())
    assert all(p.requires_grad for p in model.roi_heads.box_predictor.parameters())


@pytest.mark.parametrize(("norm", "kind"), [("sync", nn.SyncBatchNorm), ("train", nn.BatchNorm2d)])
def test_sync_and_train_norm(norm: str, kind: type) -> None:
    det = _cfg(f"eval.detection.norm={norm}", "eval.detection.trainable_layers=5").eval.detection
    model = build_detector(_backbone(), 1, det, (0.5,) * 3, (0.25,) * 3)
    assert type(model.backbone.body.bn1) is kind
    assert all(p.requires_grad for p in model.parameters())  # 5: stem included


def _batch() -> tuple[list[torch.Tensor], list[dict]]:
    boxes = [[(6, 8, 30, 40)], [(20, 4, 60, 28), (2, 40, 20, 62)]]
    images = [torch.from_numpy(image_with_boxes(b)).permute(2, 0, 1).float() / 255 for b in boxes]
    targets = [{"boxes": torch.tensor(b, dtype=torch.float32), "labels": torch.tensor([1, 2][: len(b)])} for b in boxes]
    return images, targets


# c4's box head is layer4, run once per sampled RoI: 4 RoIs per image keep its CPU step under a second.
@pytest.mark.parametrize(("architecture", "rois"), [("fpn", 16), ("c4", 4)])
def test_training_steps_reduce_the_loss(architecture: str, rois: int) -> None:
    det = _cfg(f"eval.detection.architecture={architecture}", f"eval.detection.roi_batch_size={rois}").eval.detection
    backbone = _backbone()
    torch.manual_seed(0)
    model = build_detector(backbone, 2, det, (0.5,) * 3, (0.25,) * 3)
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    images, targets = _batch()
    losses = [float(step(optimizer, detection_loss(model, images, targets))) for _ in range(8)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses  # sampled anchors and RoIs make single steps noisy


def test_cifar_stem_backbone_detects() -> None:
    """The stride-1 CIFAR stem changes every level's stride; anchors and RoI levels follow the feature sizes."""
    det = _cfg("eval.detection.min_size=32", "eval.detection.max_size=32").eval.detection
    model = build_detector(_backbone(cifar_stem=True), 2, det, (0.5,) * 3, (0.25,) * 3).eval()
    with torch.inference_mode():
        (out,) = model([torch.rand(3, 32, 32)])
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"])


def _timm_backbone(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone(name, **({"image_size": 32, "patch_size": 4} if name == "vit_tiny" else {}))[0]


@pytest.mark.parametrize("name", ["timm:convnext_atto", "vit_tiny"])
def test_timm_cnn_and_vit_detectors_learn(name: str) -> None:
    """A timm CNN through torchvision's FPN over its four levels, a ViT through ViTDet's simple pyramid: the
    deepest two stages train (trainable_layers=2), and a few steps reduce the loss."""
    det = _cfg("eval.detection.trainable_layers=2").eval.detection
    model = build_detector(_timm_backbone(name), 2, det, (0.5,) * 3, (0.25,) * 3)
    body = model.backbone.body
    trained = {n for n, p in body.named_parameters() if p.requires_grad}
    assert trained and trained == set().union(*body.stages[:2])
    assert all(p.requires_grad for p in model.backbone.fpn.parameters())
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    images, targets = _batch()
    losses = [float(step(optimizer, detection_loss(model, images, targets))) for _ in range(8)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    with torch.inference_mode():
        (out,) = model.eval()([torch.rand(3, 48, 40)])
    assert out["boxes"].shape[1] == 4 and len(out["boxes"]) == len(out["scores"])


def test_frozen_norm_keeps_timm_norm_act_layers() -> None:
    """EfficientNet's BatchNormAct2d (BatchNorm followed by its activation) freezes into timm's
    FrozenBatchNormAct2d: the frozen features equal the backbone's in eval mode."""
    net = _timm_backbone("timm:efficientnet_b0")
    det = _cfg("eval.detection.norm=frozen").eval.detection
    body = build_detector(net, 1, det, (0.5,) * 3, (0.25,) * 3).backbone.body.eval()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(
            torch.allclose(a, b, atol=1e-5)
            for a, b in zip(
                body(x), net.eval().forward_intermediates(x, indices=[1, 2, 3, 4], intermediates_only=True), strict=True
            )
        )


def test_c4_needs_a_resnet() -> None:
    det = _cfg("eval.detection.architecture=c4").eval.detection
    with pytest.raises(
        UserError, match=r"architecture=c4 uses a ResNet's layer4 .* set eval.detection.architecture=fpn"
    ):
        build_detector(_timm_backbone("timm:convnext_atto"), 1, det, (0.5,) * 3, (0.25,) * 3)


def test_hflip_mirrors_boxes() -> None:
    image = torch.arange(2 * 3 * 64, dtype=torch.uint8).reshape(1, 2, 3 * 64)[:, :, :64]
    target = {"boxes": torch.tensor([[0.0, 5, 10, 20]]), "labels": torch.tensor([1])}
    flipped, mirrored = hflip(image, target)
    assert mirrored["boxes"].tolist() == [[54, 5, 64, 20]] and torch.equal(flipped[..., 0], image[..., -1])
    assert torch.equal(hflip(flipped, mirrored)[1]["boxes"], target["boxes"])


def test_chunked_training_resumes_and_constant_lr(tmp_path: Path) -> None:
    root, _ = write_pennfudan(tmp_path / "PennFudanPed")
    base = [
        "eval.detection.format=pennfudan",
        f"eval.detection.root={root}",
        "eval.detection.train_split=train",
        "eval.detection.epochs=2",
        "eval.detection.chunk_epochs=1",
        "eval.detection.lr=0.01",
        "eval.detection.lr_step_epochs=[1]",
    ]
    state_path = tmp_path / "eval" / "detection-state.pt"

    def job(*overrides: str) -> TransferJob:
        return TransferJob(_cfg(*base, *overrides), _backbone(), 512, torch.device("cpu"), state_path, progress=False)

    first = run(job())
    assert not first.complete and first.extra["epochs_trained"] == 1
    state = torch.load(state_path, weights_only=True)
    assert state["epoch"] == 1 and state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)  # epoch 1's
    assert (
        {"map", "map_50", "map_75"}
        <= set(first.metrics)
        <= {"map", "map_50", "map_75", "map_small", "map_medium", "map_large"}
    )
    assert all(0 <= v <= 100 for v in first.metrics.values())
    assert first.dataset["classes"] == ["person"] and first.dataset["train_size"] == 2
    assert first.params["chunk_epochs"] == 1

    # The resumed call trains epoch 2 only, with the constant lr replacing the saved (scheduled) one.
    second = run(job("eval.detection.constant_lr_after=1", "eval.detection.constant_lr=0.0123"))
    assert second.complete and second.extra["epochs_trained"] == 2
    assert len(second.extra["train_loss_per_epoch"]) == 2
    assert second.extra["train_loss_per_epoch"][0] == first.extra["train_loss_per_epoch"][0]
    state = torch.load(state_path, weights_only=True)
    assert state["epoch"] == 2 and state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0123)
    # The schedule as a function of the epoch: x 0.1 from epoch 2 (lr_step_epochs=[1]), or the constant lr.
    det = job().cfg.eval.detection
    assert [detection_lr_factor(det)(e, 0) * det.lr for e in (0, 1, 5)] == pytest.approx([0.01, 0.001, 0.001])
    constant = job("eval.detection.constant_lr_after=1", "eval.detection.constant_lr=0.0123").cfg.eval.detection
    assert [detection_lr_factor(constant)(e, 0) * constant.lr for e in (0, 1)] == pytest.approx([0.01, 0.0123])

    state_path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot resume detection training from .*delete it"):
        run(job())


def test_bad_settings_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"eval\.detection\.architecture must be one of fpn | c4, got 'rcnn'"):
        run(TransferJob(_cfg("eval.detection.architecture=rcnn"), _backbone(), 512, torch.device("cpu"), tmp_path))
    with pytest.raises(UserError, match=r"constant_lr_after and constant_lr together"):
        run(TransferJob(_cfg("eval.detection.constant_lr=0.1"), _backbone(), 512, torch.device("cpu"), tmp_path))
    cfg = _cfg(f"eval.detection.root={tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match=r"no VOC annotations in .*nowhere.*set eval\.detection\.root="):
        run(TransferJob(cfg, _backbone(), 512, torch.device("cpu"), tmp_path / "state.pt"))
