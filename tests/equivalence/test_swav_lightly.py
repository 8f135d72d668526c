"""SwAV against lightly 1.6's SwAV example (backbone, SwaVProjectionHead, SwaVPrototypes with frozen prototypes,
SwaVLoss) with multi-crop (2 global + 2 local crops) and a queue, step by step: loss, gradients, backbone,
projector, prototypes and queue.

Differences, and how the comparison bridges them:
- selfsup encodes the crops of one resolution in one forward over torch.cat (BatchNorm statistics over the
  concatenation, DINO's MultiCropWrapper); lightly's example forwards each crop on its own. lightly's modules are
  fed the same concatenations here.
- lightly's SwaVPrototypes is an nn.Linear with a bias; the official SwAV's prototypes (and selfsup's) have none.
  lightly's bias is removed here.
- lightly's example normalises the prototypes at the start of each step, selfsup at construction and after each
  optimizer step: the same sequence; lightly's side normalises once before step 0 and after each step here.
- Frozen prototypes: lightly (requires_grad off) and the official code (grad = None after backward) leave them
  without a gradient; selfsup's loop drops theirs after backward (`drop_frozen_gradients`), called here where
  its loop calls it, so that both optimizers skip the prototypes alike.
- The queue: lightly's SwaVLoss takes the queue's prototype scores (queue_outputs) but lightly's example keeps no
  queue (its MemoryBankModule is a ring buffer starting from random features); lightly's side keeps the official
  SwAV's queue here (zeros, newest first, used once full), whose scores lightly's loss receives.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from selfsup.methods.base import Schedule
from selfsup.methods.swav import SwAV
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
FEATURES, HIDDEN, OUT, PROTOTYPES, BATCH, QUEUE, LR = 8, 16, 8, 6, 8, 16, 0.5
FROZEN_STEPS = 2  # prototypes without gradient at steps 0 and 1 (one step per epoch)
TEMPERATURE, EPS, ITERS = 0.1, 0.05, 3
VIEWS = random_views(batch=BATCH, sizes=MULTI_CROP)


def swav_sides() -> Sides:
    """selfsup's SwAV and lightly's modules on one backbone, with identical SGDs and after-step updates."""
    from lightly.loss import SwaVLoss
    from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = SwAV(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        proj_output_dim=OUT,
        num_prototypes=PROTOTYPES,
        temperature=TEMPERATURE,
        sinkhorn_eps=EPS,
        sinkhorn_iters=ITERS,
        freeze_prototypes_epochs=FROZEN_STEPS,
        queue_size=QUEUE,
    )
    head = SwaVProjectionHead(FEATURES, HIDDEN, OUT)
    prototypes = SwaVPrototypes(OUT, PROTOTYPES, n_steps_frozen_prototypes=FROZEN_STEPS)
    prototypes.heads[0].bias = None
    prototypes.normalize()
    queue = torch.zeros(2, QUEUE, OUT)
    criterion = SwaVLoss(temperature=TEMPERATURE, sinkhorn_iterations=ITERS, sinkhorn_epsilon=EPS)

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        z = [F.normalize(head(backbone(torch.cat(views[i : i + 2]))), dim=1) for i in (0, 2)]
        crops = [p for zi in z for p in prototypes(zi, step).chunk(2)]
        high = [z[0][:BATCH].detach(), z[0][BATCH:].detach()]
        queue_outputs = [prototypes(queue[i], step) for i in range(2)] if queue[:, -1].any() else None
        for i in range(2):
            queue[i] = torch.cat([high[i], queue[i, :-BATCH]])
        return criterion(crops[:2], crops[2:], queue_outputs).squeeze(0)  # lightly's loss is [1]

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS, 1))["loss"]

    return Sides(
        pairs=[
            Pair("backbone", ours.backbone, backbone),
            Pair("projector", ours.projector, head),
            Pair("prototypes", ours.prototypes, prototypes.heads[0]),
            Pair("queue", held(queue=ours.queue), held(queue=queue)),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(
            sgd(ours.parameters(), LR),
            sgd([*backbone.parameters(), *head.parameters(), *prototypes.parameters()], LR),
        ),
        after_step=(lambda step: ours.after_optimizer_step(step, STEPS), lambda step: prototypes.normalize()),
        # one step per epoch: lightly's epoch-based options count these steps
        after_backward=lambda step: ours.drop_frozen_gradients(Schedule(step, STEPS, 1)),
    )


def test_swav_steps_equal_lightly() -> None:
    """Loss, gradients, weights, BatchNorm buffers and queue equal lightly's at each of STEPS SGD steps, through
    the frozen prototypes (steps 0-1), their release, and the queue's filling (full, then used, from step 2)."""
    require_lightly()
    sides = swav_sides()
    prototypes = sides.pairs[2].selfsup.weight.detach().clone()
    losses = sides.lockstep(VIEWS)
    assert len(set(losses)) == STEPS
    assert not torch.equal(prototypes, sides.pairs[2].selfsup.weight), "the prototypes never moved"


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_swav_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        swav_sides().lockstep(VIEWS, perturb=side)
