"""DINO against lightly 1.6's DINO example (student and teacher backbones and DINOProjectionHeads, DINOLoss with
its teacher-temperature warmup and centre, update_momentum on cosine_schedule, cancel_last_layer_gradients),
with multi-crop (2 global + 2 local crops), on a BatchNorm conv backbone and on a tiny timm ViT, step by step:
loss, gradients, student, teacher and centre; the teacher temperature, the momentum and whether the last layer
is frozen are compared at every step, and the 5 steps pass through the warmup's end and the layer's release.

Differences, and how the comparison bridges them:
- selfsup encodes the student's crops of one resolution in one forward over torch.cat (BatchNorm statistics over
  the concatenation); lightly's example forwards each crop on its own. On the conv backbone lightly's modules are
  fed the same concatenations; the ViT has no batch statistics, so there lightly keeps its per-crop forwards.
- Teacher temperature: lightly (as the official code) interpolates per epoch by linspace(warmup, final, W), so
  it reaches the final value at epoch W - 1; selfsup interpolates per step, reaching it after W epochs. With one
  step per epoch selfsup's warmup over W epochs equals lightly's over W + 1, as set here.
- Momentum: lightly's cosine_schedule(step, max_steps) reaches its end at max_steps - 1, selfsup's (BYOL's and
  the official DINO's) at total_steps: lightly's is called with max_steps = total + 1. lightly's example updates
  the teacher before each forward, selfsup after each optimizer step: the same sequence (the example's first
  update is an identity), done after each step on both sides here.
- Teacher buffers: selfsup's EMA copies the student's BatchNorm running statistics into the teacher; lightly's
  update_momentum (as the official code) moves parameters only. The teacher runs in training mode, so its
  outputs do not depend on them; lightly's side copies them after its update too.
- Frozen last layer: lightly (cancel_last_layer_gradients), the official code and selfsup's loop
  (`drop_frozen_gradients`) all drop its gradient after backward; both are called here where their loops call
  them, so that both optimizers skip the layer alike.
- lightly's example builds the teacher head anew (an initialisation of its own); the official code and selfsup
  start the teacher as a copy of the student: lightly's teacher head is loaded with its student's weights here.
- lightly's centre is [1, 1, K], selfsup's [1, K]: compared through a view of selfsup's.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from selfsup.methods.base import Schedule
from selfsup.methods.dino import DINO
from selfsup.methods.momentum import cosine_momentum
from tests.equivalence.harness import (
    MULTI_CROP,
    STEPS,
    Pair,
    Sides,
    held,
    random_views,
    require_lightly,
    sgd,
    tiny_backbone,
)

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, BOTTLENECK, OUT = 16, 16, 8, 10  # FEATURES: the width of both backbones
STUDENT_TEMP, WARMUP_TEMP, TEACHER_TEMP, WARMUP_EPOCHS = 0.1, 0.04, 0.07, 2  # warm at steps 0-1, final from 2
FROZEN_STEPS, CENTER_MOMENTUM, MOMENTUM = 2, 0.9, 0.9
VIEWS = random_views(sizes=MULTI_CROP)


def vit_backbone() -> nn.Module:
    """A one-block timm ViT of width 16 on 4-px patches (16-px global crops, 8-px local crops, as selfsup's ViTs
    take them: dynamic_img_size), the CLS token as features."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=16, patch_size=4, embed_dim=FEATURES, depth=1, num_heads=2, mlp_ratio=2.0, num_classes=0,
        dynamic_img_size=True,
    )  # fmt: skip


BACKBONES = {"conv": lambda: tiny_backbone(FEATURES), "vit": vit_backbone}


def dino_sides(kind: str) -> Sides:
    """selfsup's DINO and lightly's example modules on one backbone, with identical SGDs and after-step updates."""
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    torch.manual_seed(0)
    backbone = BACKBONES[kind]()
    ours = DINO(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        bottleneck_dim=BOTTLENECK,
        out_dim=OUT,
        student_temperature=STUDENT_TEMP,
        teacher_temperature=TEACHER_TEMP,
        warmup_teacher_temperature=WARMUP_TEMP,
        warmup_teacher_temperature_epochs=WARMUP_EPOCHS,
        center_momentum=CENTER_MOMENTUM,
        momentum=MOMENTUM,
        freeze_last_layer_epochs=FROZEN_STEPS,
    )
    head = DINOProjectionHead(FEATURES, HIDDEN, BOTTLENECK, OUT, freeze_last_layer=FROZEN_STEPS)
    teacher_backbone = copy.deepcopy(backbone)
    teacher_head = DINOProjectionHead(FEATURES, HIDDEN, BOTTLENECK, OUT)
    teacher_head.load_state_dict(head.state_dict())
    deactivate_requires_grad(teacher_backbone)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(
        OUT, WARMUP_TEMP, TEACHER_TEMP, WARMUP_EPOCHS + 1, STUDENT_TEMP, center_momentum=CENTER_MOMENTUM
    )

    def student(crops: list[torch.Tensor]) -> list[torch.Tensor]:
        if kind == "vit":
            return [head(backbone(crop)) for crop in crops]
        return [*head(backbone(torch.cat(crops[:2]))).chunk(2), *head(backbone(torch.cat(crops[2:]))).chunk(2)]

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        # one step per epoch: lightly's epoch-based options count these steps
        schedule = Schedule(step, STEPS, 1)
        lightly_temp = criterion.teacher_temp_schedule[step] if step <= WARMUP_EPOCHS else criterion.teacher_temp
        assert ours.teacher_temperature_at(schedule) == pytest.approx(float(lightly_temp), abs=1e-7), "teacher temp"
        assert ours.last_layer_frozen(schedule) == (step < head.freeze_last_layer), "frozen last layer"
        with torch.no_grad():
            teacher = list(teacher_head(teacher_backbone(torch.cat(views[:2]))).chunk(2))
        return criterion(teacher, student(views), epoch=step)

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS, 1))["loss"]

    def drop_frozen(step: int) -> None:
        ours.drop_frozen_gradients(Schedule(step, STEPS, 1))
        head.cancel_last_layer_gradients(current_epoch=step)

    @torch.no_grad()
    def lightly_after(step: int) -> None:
        m = cosine_schedule(step, STEPS + 1, MOMENTUM, 1.0)
        assert m == pytest.approx(cosine_momentum(step, STEPS, MOMENTUM, 1.0), abs=1e-12), "momentum"
        update_momentum(backbone, teacher_backbone, m)
        update_momentum(head, teacher_head, m)
        for target, online in zip(teacher_backbone.buffers(), backbone.buffers(), strict=True):
            target.copy_(online)

    return Sides(
        pairs=[
            Pair("backbone", ours.backbone, backbone),
            Pair("head", ours.head, head),
            Pair("teacher_backbone", ours.teacher_backbone, teacher_backbone),
            Pair("teacher_head", ours.teacher_head, teacher_head),
            Pair("center", held(center=ours.center.view(1, 1, -1)), criterion),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(
            # the default lr: at 0.5 the ViT's rounding differences grow to the tolerance within the steps
            sgd([p for p in ours.parameters() if p.requires_grad]),
            sgd([p for m in (backbone, head) for p in m.parameters() if p.requires_grad]),
        ),
        after_step=(lambda step: ours.after_optimizer_step(step, STEPS), lightly_after),
        after_backward=drop_frozen,
    )


@pytest.mark.parametrize("kind", BACKBONES)
def test_dino_steps_equal_lightly(kind: str) -> None:
    """Loss, gradients, student, teacher and centre equal lightly's at each of STEPS SGD steps, through the
    teacher-temperature warmup (steps 0-1), the frozen last layer (steps 0-1) and its release."""
    require_lightly()
    sides = dino_sides(kind)
    last_layer = sides.pairs[1].selfsup.last_layer.parametrizations.weight.original1.detach().clone()
    losses = sides.lockstep(VIEWS)
    assert len(set(losses)) == STEPS
    assert not torch.equal(last_layer, sides.pairs[1].selfsup.last_layer.parametrizations.weight.original1)


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
@pytest.mark.parametrize("kind", BACKBONES)
def test_dino_lockstep_fails_on_a_perturbed_loss(kind: str, side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        dino_sides(kind).lockstep(VIEWS, perturb=side)
