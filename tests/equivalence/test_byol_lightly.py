"""BYOL against lightly 1.6's BYOL example (projection and prediction heads, momentum encoders by
update_momentum on cosine_schedule, NegativeCosineSimilarity), step by step: loss, gradients, online and target
networks.

Differences, and how the comparison bridges them:
- selfsup encodes both views in one forward over torch.cat(views), online and target (BatchNorm statistics over
  the 2B images); lightly's example forwards each view on its own. lightly's modules are fed the concatenation.
- Loss scale: selfsup's is the paper's sum over both directions of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z), i.e.
  4 + 4 x lightly's 0.5 * (-cos(p0, z1) - cos(p1, z0)), with 4x its gradients. lightly's loss enters through
  that affine map (lightly at 4x the learning rate and a quarter of the weight decay would be the same run).
- Momentum schedule: both are BYOL's tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2, but lightly's
  cosine_schedule divides by max_steps - 1 (reaching 1 on its last step), selfsup's cosine_momentum by the
  run's total steps: they agree with max_steps = total_steps + 1 (test_byol_momentum_schedule_equals_lightly).
  lightly's example applies the EMA before each forward with that step's momentum, selfsup after each
  optimizer step with the momentum of the step taken; both sides update after the step here.
- Target buffers: selfsup's EMA copies the online BatchNorm running statistics into the target; lightly's
  update_momentum moves parameters only. The target runs in training mode, so outputs do not depend on them;
  lightly's side copies the buffers after its update here, so that every other buffer is still compared.
"""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.methods.base import Schedule
from selfsup.methods.byol import BYOL
from selfsup.methods.momentum import cosine_momentum
from tests.equivalence.harness import STEPS, Pair, Sides, random_views, require_lightly, sgd, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
# A base momentum well below the paper's 0.996, so that the target moves visibly within STEPS steps.
FEATURES, HIDDEN, OUT, PRED_HIDDEN, BASE_MOMENTUM = 16, 32, 8, 24, 0.9


def byol_sides() -> Sides:
    """selfsup's BYOL and lightly's example model on one backbone, with identical SGDs."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = BYOL(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        proj_output_dim=OUT,
        momentum=BASE_MOMENTUM,
        predictor={"hidden_dim": PRED_HIDDEN},
    )
    head = BYOLProjectionHead(FEATURES, HIDDEN, OUT)
    predictor = BYOLPredictionHead(OUT, PRED_HIDDEN, OUT)
    backbone_momentum, head_momentum = copy.deepcopy(backbone), copy.deepcopy(head)
    deactivate_requires_grad(backbone_momentum)
    deactivate_requires_grad(head_momentum)
    criterion = NegativeCosineSimilarity()

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(views)
        p0, p1 = predictor(head(backbone(x).flatten(start_dim=1))).chunk(2)
        z0, z1 = head_momentum(backbone_momentum(x).flatten(start_dim=1)).detach().chunk(2)
        return 4 + 4 * (0.5 * (criterion(p0, z1) + criterion(p1, z0)))

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS))["loss"]

    @torch.no_grad()
    def lightly_update(step: int) -> None:
        momentum = cosine_schedule(step, STEPS + 1, BASE_MOMENTUM, 1.0)
        for online, target in ((backbone, backbone_momentum), (head, head_momentum)):
            update_momentum(online, target, m=momentum)
            for theirs, mine in zip(target.buffers(), online.buffers(), strict=True):
                theirs.copy_(mine)

    return Sides(
        pairs=[
            Pair("backbone", ours.backbone, backbone),
            Pair("projector", ours.projector, head),
            Pair("predictor", ours.predictor, predictor),
            Pair("target_backbone", ours.target_backbone, backbone_momentum),
            Pair("target_projector", ours.target_projector, head_momentum),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(
            sgd(ours.parameters()),
            sgd([*backbone.parameters(), *head.parameters(), *predictor.parameters()]),
        ),
        after_step=(lambda step: ours.after_optimizer_step(step, STEPS), lightly_update),
    )


def test_byol_steps_equal_lightly() -> None:
    """Loss, gradients, online and target networks equal lightly's at each of STEPS steps."""
    require_lightly()
    losses = byol_sides().lockstep(random_views())
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("total_steps", [STEPS, 1000])
def test_byol_momentum_schedule_equals_lightly(total_steps: int) -> None:
    """selfsup's cosine momentum 0.996 -> 1 equals lightly's cosine_schedule at every step of a run, the last
    (tau = 1) included."""
    require_lightly()
    from lightly.utils.scheduler import cosine_schedule

    for step in range(total_steps + 1):
        ours = cosine_momentum(step, total_steps, 0.996, 1.0)
        assert ours == pytest.approx(cosine_schedule(step, total_steps + 1, 0.996, 1.0), rel=0, abs=1e-12), step
    assert cosine_momentum(0, total_steps, 0.996) == 0.996 and cosine_momentum(total_steps, total_steps, 0.996) == 1


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_byol_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        byol_sides().lockstep(random_views(), perturb=side)
