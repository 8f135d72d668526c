"""MoCo v3 against lightly 1.6's modules (MoCoProjectionHead in its v3 setting, update_momentum on
cosine_schedule), step by step: loss, gradients, online and momentum encoders, and the momentum at every step.

Differences, and how the comparison bridges them:
- lightly 1.6 ships MoCo v3's projection head but no MoCo v3 loss, predictor or example: lightly's side computes
  the paper's ctr(q, k) (Algorithm 1: cross-entropy of q k^T / T against the batch's keys, times 2T) in the test,
  and builds the predictor from lightly's ProjectionHead blocks in selfsup's layout (Linear-BN-ReLU-Linear with a
  biased last Linear; the official _build_mlp's last Linear has no bias).
- lightly's MoCoProjectionHead(batch_norm=True) ends in an affine BatchNorm; the official _build_mlp (and selfsup)
  in one without affine parameters: lightly's last BatchNorm is replaced by BatchNorm1d(affine=False) here.
- selfsup encodes both views in one forward over torch.cat (BatchNorm statistics over the 2B images); the official
  code forwards each view on its own. lightly's modules are fed the same concatenation here.
- Momentum: lightly's cosine_schedule(step, max_steps) reaches its end at max_steps - 1, selfsup's (the paper's) at
  total_steps: lightly's is called with max_steps = total + 1.
- Momentum-encoder buffers: selfsup's EMA copies the online BatchNorm running statistics; lightly's
  update_momentum moves parameters only. The momentum encoder runs in training mode, so its outputs do not
  depend on them; lightly's side copies them after its update too.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from selfsup.methods.base import Schedule
from selfsup.methods.moco_v3 import MoCoV3
from selfsup.methods.momentum import cosine_momentum
from tests.equivalence.harness import STEPS, Pair, Sides, random_views, require_lightly, sgd, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT, TEMPERATURE, MOMENTUM, LR = 16, 16, 8, 0.2, 0.9, 0.5


def ctr(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """MoCo v3's Algorithm 1: ctr(q, k) on normalised q and k, scaled by 2T."""
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / TEMPERATURE
    return F.cross_entropy(logits, torch.arange(q.shape[0])) * 2 * TEMPERATURE


def moco_v3_sides() -> Sides:
    """selfsup's MoCo v3 and lightly's modules on one backbone, with identical SGDs and after-step updates."""
    from lightly.models.modules.heads import MoCoProjectionHead, ProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = MoCoV3(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        proj_output_dim=OUT,
        proj_layers=3,
        pred_hidden_dim=HIDDEN,
        temperature=TEMPERATURE,
        momentum=MOMENTUM,
    )
    projector = MoCoProjectionHead(FEATURES, HIDDEN, OUT, num_layers=3, batch_norm=True)
    projector.layers[-1] = nn.BatchNorm1d(OUT, affine=False)
    predictor = ProjectionHead([(OUT, HIDDEN, nn.BatchNorm1d(HIDDEN), nn.ReLU()), (HIDDEN, OUT, None, None, True)])
    momentum_backbone, momentum_projector = copy.deepcopy(backbone), copy.deepcopy(projector)
    deactivate_requires_grad(momentum_backbone)
    deactivate_requires_grad(momentum_projector)

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(views)
        q1, q2 = predictor(projector(backbone(x))).chunk(2)
        with torch.no_grad():
            k1, k2 = momentum_projector(momentum_backbone(x)).chunk(2)
        return ctr(q1, k2) + ctr(q2, k1)

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS))["loss"]

    @torch.no_grad()
    def lightly_after(step: int) -> None:
        m = cosine_schedule(step, STEPS + 1, MOMENTUM, 1.0)
        assert m == pytest.approx(cosine_momentum(step, STEPS, MOMENTUM, 1.0), abs=1e-12), "momentum"
        for online, target in ((backbone, momentum_backbone), (projector, momentum_projector)):
            update_momentum(online, target, m)
            for t, o in zip(target.buffers(), online.buffers(), strict=True):
                t.copy_(o)

    return Sides(
        pairs=[
            Pair("backbone", ours.backbone, backbone),
            Pair("projector", ours.projector, projector),
            Pair("predictor", ours.predictor, predictor),
            Pair("momentum_backbone", ours.momentum_backbone, momentum_backbone),
            Pair("momentum_projector", ours.momentum_projector, momentum_projector),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(
            sgd([p for p in ours.parameters() if p.requires_grad], LR),
            sgd([p for m in (backbone, projector, predictor) for p in m.parameters()], LR),
        ),
        after_step=(lambda step: ours.after_optimizer_step(step, STEPS), lightly_after),
    )


def test_moco_v3_steps_equal_lightly() -> None:
    """Loss, gradients, online and momentum encoders (parameters and BatchNorm buffers) equal lightly's at each
    of STEPS SGD steps, with the momentum on its cosine from 0.9 to 1."""
    require_lightly()
    losses = moco_v3_sides().lockstep(random_views())
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_moco_v3_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        moco_v3_sides().lockstep(random_views(), perturb=side)
