"""SimCLR against lightly 1.6's SimCLR example (backbone, projection head, NTXentLoss), step by step.

Differences, and how the comparison bridges them:
- selfsup encodes both views in one forward over torch.cat(views) (BatchNorm statistics over the 2B images, as in
  the paper's implementation); lightly's example forwards each view on its own. lightly's modules are fed the
  concatenation here.
- selfsup's projector is the paper's g(h) = W2 relu(BN(W1 h)) ending in a biased Linear; lightly's
  SimCLRProjectionHead adds a BatchNorm on the output (the official TF code's). lightly's side is built from
  lightly's ProjectionHead with selfsup's blocks (the layout of lightly's BYOLProjectionHead).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from selfsup.methods.simclr import SimCLR
from tests.equivalence.harness import STEPS, Sides, one_head_sides, random_views, require_lightly, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT, TEMPERATURE = 16, 32, 8, 0.1


def simclr_sides() -> Sides:
    """selfsup's SimCLR and lightly's example model on one backbone, with identical SGDs."""
    from lightly.loss import NTXentLoss
    from lightly.models.modules.heads import ProjectionHead

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = SimCLR(
        copy.deepcopy(backbone), FEATURES, temperature=TEMPERATURE, proj_hidden_dim=HIDDEN, proj_output_dim=OUT
    )
    head = ProjectionHead([(FEATURES, HIDDEN, nn.BatchNorm1d(HIDDEN), nn.ReLU()), (HIDDEN, OUT, None, None)])
    criterion = NTXentLoss(temperature=TEMPERATURE)

    return one_head_sides(ours, "projector", backbone, head, criterion)


def test_simclr_steps_equal_lightly() -> None:
    """Loss, gradients, weights and BatchNorm buffers equal lightly's at each of STEPS SGD steps."""
    require_lightly()
    losses = simclr_sides().lockstep(random_views())
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_simclr_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        simclr_sides().lockstep(random_views(), perturb=side)
