"""SimSiam against lightly 1.6's SimSiam example (SimSiamProjectionHead, SimSiamPredictionHead,
NegativeCosineSimilarity on detached projections), step by step.

Differences, and how the comparison bridges them:
- selfsup encodes both views in one forward over torch.cat(views), and predicts from torch.cat([z1, z2])
  (BatchNorm statistics over the 2B images in the backbone, projector and predictor); lightly's example
  forwards each view on its own. lightly's modules are fed the concatenation here.
- selfsup's predictor keeps a fixed learning rate under a schedule (the paper's, method.fixed_predictor_lr) by
  its own parameter group; with the constant-lr SGD of both sides here that makes no difference.
"""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.methods.base import Schedule
from selfsup.methods.simsiam import SimSiam
from tests.equivalence.harness import STEPS, Pair, Sides, random_views, require_lightly, sgd, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT, PRED_HIDDEN = 16, 32, 16, 8


def simsiam_sides() -> Sides:
    """selfsup's SimSiam and lightly's example model on one backbone, with identical SGDs."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = SimSiam(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        proj_output_dim=OUT,
        predictor={"hidden_dim": PRED_HIDDEN},
    )
    head = SimSiamProjectionHead(FEATURES, HIDDEN, OUT)
    predictor = SimSiamPredictionHead(OUT, PRED_HIDDEN, OUT)
    criterion = NegativeCosineSimilarity()

    def lightly_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        z = head(backbone(torch.cat(views)).flatten(start_dim=1))
        (p0, p1), (z0, z1) = predictor(z).chunk(2), z.detach().chunk(2)
        return 0.5 * (criterion(z0, p1) + criterion(z1, p0))

    def selfsup_loss(step: int, views: list[torch.Tensor]) -> torch.Tensor:
        return ours(views, Schedule(step, STEPS))["loss"]

    return Sides(
        pairs=[
            Pair("backbone", ours.backbone, backbone),
            Pair("projector", ours.projector, head),
            Pair("predictor", ours.predictor, predictor),
        ],
        selfsup_loss=selfsup_loss,
        lightly_loss=lightly_loss,
        optimizers=(
            sgd(ours.parameters()),
            sgd([*backbone.parameters(), *head.parameters(), *predictor.parameters()]),
        ),
    )


def test_simsiam_steps_equal_lightly() -> None:
    """Loss, gradients, weights and BatchNorm buffers equal lightly's at each of STEPS SGD steps."""
    require_lightly()
    losses = simsiam_sides().lockstep(random_views())
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_simsiam_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        simsiam_sides().lockstep(random_views(), perturb=side)
