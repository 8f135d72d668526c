"""MoCo v2 against lightly 1.6's MoCo example (momentum encoders by update_momentum, NTXentLoss with a memory
bank as the queue), step by step: loss, gradients, online and key encoders, queue and queue pointer.

Differences, and how the comparison bridges them:
- Projector: selfsup's is Linear-BN-ReLU-Linear (its projector of every method); lightly's MoCoProjectionHead
  (batch_norm=False, MoCo v2's official head) has no BatchNorm and a biased first Linear. lightly's side is built
  from lightly's ProjectionHead with selfsup's blocks.
- Key-encoder buffers: selfsup's EMA copies the online BatchNorm running statistics into the key encoder;
  lightly's update_momentum moves parameters only, the key encoder keeping statistics of its own forwards. The
  key encoder runs in training mode, so outputs and gradients do not depend on them; lightly's side copies
  the buffers after its update here, so that every other buffer is still compared.
- Momentum: lightly's example schedules it by cosine from 0.996; selfsup keeps MoCo's constant moco_m, used on
  both sides. lightly's example updates the key encoder before each forward, selfsup after each optimizer step:
  the same sequence (the example's first update is an identity), done after each step on both sides here.
- The queue: selfsup's is a ring buffer; lightly's memory bank drops the keys past its end and restarts at 0.
  They agree when the queue size is a multiple of the batch, as here (it wraps at step 3). Both enqueue the
  normalised keys after reading the queue for the loss. lightly's random initial bank is copied into selfsup's.
- selfsup's symmetric variant (method.symmetric) reads the same pre-step queue for both terms; two calls of
  lightly's criterion would enqueue between them, so the comparison is on MoCo v2's one-sided loss.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from selfsup.methods.base import Schedule
from selfsup.methods.moco import MoCo
from tests.equivalence.harness import STEPS, Pair, Sides, random_views, require_lightly, sgd, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT, QUEUE, TEMPERATURE, MOMENTUM, BATCH = 16, 32, 8, 32, 0.2, 0.9, 8


def queue_of(moco: MoCo) -> nn.Module:
    """selfsup's queue and pointer in the layout of lightly's MemoryBankModule (bank [K, D], bank_ptr [1]), as
    views of the same storage, so that copying into it sets selfsup's queue."""
    holder = nn.Module()
    holder.register_buffer("bank", moco.queue)
    holder.register_buffer("bank_ptr", moco.queue_ptr.view(1))
    return holder


def moco_sides() -> Sides:
    """selfsup's MoCo and lightly's example model on one backbone, with identical SGDs."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import ProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = MoCo(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        proj_output_dim=OUT,
        moco_k=QUEUE,
        moco_t=TEMPERATURE,
        moco_m=MOMENTUM,
    )
    head = ProjectionHead([(FEATURES, HIDDEN, nn.BatchNorm1d(HIDDEN), nn.ReLU()), (HIDDEN, OUT, None, None)])
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    criterion = NTXentLoss(temperature=TEMPERATURE, memory_bank_size=(QUEUE, OUT))

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        query = head(backbone(views[0]).flatten(start_dim=1))
        key = head_momentum(backbone_momentum(views[1]).flatten(start_dim=1)).detach()
        return criterion(query, key)

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS))["loss"]

    @torch.no_grad()
    def lightly_update(step: int) -> None:
        for online, key in ((backbone, backbone_momentum), (head, head_momentum)):
            update_momentum(online, key, m=MOMENTUM)
            for theirs, mine in zip(key.buffers(), online.buffers(), strict=True):
                theirs.copy_(mine)

    return Sides(
        pairs=[
            Pair("backbone", ours.backbone, backbone),
            Pair("projector", ours.projector, head),
            Pair("key_backbone", ours.key_backbone, backbone_momentum),
            Pair("key_projector", ours.key_projector, head_momentum),
            Pair("queue", queue_of(ours), criterion.memory_bank),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(sgd(ours.parameters()), sgd([*backbone.parameters(), *head.parameters()])),
        after_step=(lambda step: ours.after_optimizer_step(step, STEPS), lightly_update),
    )


def test_moco_steps_equal_lightly() -> None:
    """Loss, gradients, online and key encoders, queue and pointer equal lightly's at each of STEPS steps,
    the queue wrapping around once."""
    require_lightly()
    sides = moco_sides()
    losses = sides.lockstep(random_views(batch=BATCH))
    assert len(set(losses)) == STEPS
    assert STEPS * BATCH > QUEUE and QUEUE % BATCH == 0


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_moco_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        moco_sides().lockstep(random_views(batch=BATCH), perturb=side)
