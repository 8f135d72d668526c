"""Barlow Twins against lightly 1.6's Barlow Twins example (BarlowTwinsProjectionHead, BarlowTwinsLoss with
lambda 5e-3), step by step.

Difference, and how the comparison bridges it: selfsup encodes both views in one forward over torch.cat(views)
(BatchNorm statistics over the 2B images); lightly's example forwards each view on its own. lightly's modules
are fed the concatenation here.
"""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.methods.barlow import BarlowTwins
from tests.equivalence.harness import STEPS, Sides, one_head_sides, random_views, require_lightly, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT, LAMBD = 16, 32, 32, 5e-3


def barlow_sides() -> Sides:
    """selfsup's Barlow Twins and lightly's example model on one backbone, with identical SGDs."""
    from lightly.loss import BarlowTwinsLoss
    from lightly.models.modules import BarlowTwinsProjectionHead

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = BarlowTwins(copy.deepcopy(backbone), FEATURES, proj_hidden_dim=HIDDEN, proj_output_dim=OUT, lambd=LAMBD)
    head = BarlowTwinsProjectionHead(FEATURES, HIDDEN, OUT)
    criterion = BarlowTwinsLoss(lambda_param=LAMBD)

    return one_head_sides(ours, "projector", backbone, head, criterion)


def test_barlow_steps_equal_lightly() -> None:
    """Loss, gradients, weights and BatchNorm buffers equal lightly's at each of STEPS SGD steps."""
    require_lightly()
    losses = barlow_sides().lockstep(random_views())
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_barlow_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        barlow_sides().lockstep(random_views(), perturb=side)
