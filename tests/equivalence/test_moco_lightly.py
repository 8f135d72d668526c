"""MoCo v2 against lightly 1.6's MoCo example (momentum encoders by update_momentum, NTXentLoss with a memory
bank as the queue), step by step, with the one-sided loss and the symmetric one (method.symmetric, selfsup's
CIFAR-10 default): loss, gradients, online and key encoders, queue and queue pointer.

Differences, and how the comparison bridges them:
- Projector: selfsup's is Linear-BN-ReLU-Linear (its projector of every method); lightly's MoCoProjectionHead
  (batch_norm=False, MoCo v2's official head) has no BatchNorm and a biased first Linear. lightly's side is built
  from lightly's ProjectionHead with selfsup's blocks.
- Key-encoder buffers: selfsup's EMA copies the online BatchNorm running statistics into the key encoder;
  lightly's update_momentum moves parameters only, the key encoder keeping statistics of its own forwards. The
  key encoder runs in training mode, so outputs and gradients do not depend on them; lightly's side copies
  the buffers after its update here, so that every other buffer is still compared.
- Momentum: lightly's example schedules it by cosine from 0.996; selfsup keeps MoCo's constant momentum, used on
  both sides. lightly's example updates the key encoder before each forward, selfsup after each optimizer step:
  the same sequence (the example's first update is an identity), done after each step on both sides here.
- The queue: selfsup's is a ring buffer; lightly's memory bank drops the keys past its end and restarts at 0.
  They agree when the queue size is a multiple of the keys enqueued per step, as here (it wraps at step 3, and
  at steps 1 and 3 when symmetric). Both enqueue the normalised keys after reading the queue for the loss.
  lightly's random initial bank is copied into selfsup's.
- The symmetric loss: selfsup's two terms, 0.5 (ctr(q1, k2) + ctr(q2, k1)), both read the queue as it was
  before the step, which then takes k1, then k2; two calls of lightly's criterion would enqueue between them.
  lightly's side makes one call on the stacked terms, queries [q2, q1] against keys [k1, k2]: its mean over
  the 2B rows is the average of the two terms, every row reads the pre-step bank, and the bank then takes
  [k1, k2] at once, selfsup's order. Both sides encode the queries in one forward over both views and the keys
  of each view in a forward of its own (BatchNorm statistics per view, as selfsup does).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from selfsup.methods.base import Schedule
from selfsup.methods.moco import MoCo
from tests.equivalence.harness import STEPS, Pair, Sides, held, random_views, require_lightly, sgd, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT, QUEUE, TEMPERATURE, MOMENTUM, BATCH = 16, 32, 8, 32, 0.2, 0.9, 8


def moco_sides(symmetric: bool) -> Sides:
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
        queue_size=QUEUE,
        temperature=TEMPERATURE,
        momentum=MOMENTUM,
        symmetric=symmetric,
    )
    head = ProjectionHead([(FEATURES, HIDDEN, nn.BatchNorm1d(HIDDEN), nn.ReLU()), (HIDDEN, OUT, None, None)])
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    criterion = NTXentLoss(temperature=TEMPERATURE, memory_bank_size=(QUEUE, OUT))

    def key(view: torch.Tensor) -> torch.Tensor:
        return head_momentum(backbone_momentum(view)).detach()

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        if symmetric:
            q1, q2 = head(backbone(torch.cat(views))).chunk(2)
            return criterion(torch.cat([q2, q1]), torch.cat([key(views[0]), key(views[1])]))
        return criterion(head(backbone(views[0])), key(views[1]))

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
            # selfsup's queue and pointer as views in the layout of lightly's bank ([K, D], [1])
            Pair("queue", held(bank=ours.queue, bank_ptr=ours.queue_ptr.view(1)), criterion.memory_bank),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(sgd(ours.parameters()), sgd([*backbone.parameters(), *head.parameters()])),
        after_step=(lambda step: ours.after_optimizer_step(step, STEPS), lightly_update),
    )


@pytest.mark.parametrize("symmetric", [False, True], ids=["one_sided", "symmetric"])
def test_moco_steps_equal_lightly(symmetric: bool) -> None:
    """Loss, gradients, online and key encoders, queue and pointer equal lightly's at each of STEPS steps,
    the queue wrapping around (once one-sided, twice symmetric)."""
    require_lightly()
    losses = moco_sides(symmetric).lockstep(random_views(batch=BATCH))
    assert len(set(losses)) == STEPS
    enqueued = BATCH * (2 if symmetric else 1)
    assert STEPS * enqueued > QUEUE and QUEUE % enqueued == 0


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["one_sided", "symmetric"])
def test_moco_lockstep_fails_on_a_perturbed_loss(symmetric: bool, side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        moco_sides(symmetric).lockstep(random_views(batch=BATCH), perturb=side)
