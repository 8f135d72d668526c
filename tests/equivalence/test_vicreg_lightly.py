"""VICReg against lightly 1.6's VICReg example (VICRegProjectionHead, VICRegLoss with the paper's 25 / 25 / 1),
step by step.

Difference, and how the comparison bridges it: selfsup encodes both views in one forward over torch.cat(views)
(BatchNorm statistics over the 2B images); lightly's example forwards each view on its own. lightly's modules
are fed the concatenation here.
"""

from __future__ import annotations

import copy

import pytest
import torch

from selfsup.methods.vicreg import VICReg
from tests.equivalence.harness import STEPS, Sides, one_head_sides, random_views, require_lightly, tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES, HIDDEN, OUT = 16, 32, 32
# The 25 / 25 / 1 weights make gradients of order 1: the two losses' float32 rounding (the covariance summed in
# another order; on the same embeddings both are as far from a float64 reference as from each other) puts the
# first step's gradients 1e-6 apart, growing about 3x per step to 3e-5. The default rtol, with atol 1e-4.
ATOL = 1e-4


def vicreg_sides() -> Sides:
    """selfsup's VICReg and lightly's example model on one backbone, with identical SGDs."""
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead

    torch.manual_seed(0)
    backbone = tiny_backbone(FEATURES)
    ours = VICReg(
        copy.deepcopy(backbone),
        FEATURES,
        proj_hidden_dim=HIDDEN,
        proj_output_dim=OUT,
        sim_weight=25.0,
        var_weight=25.0,
        cov_weight=1.0,
    )
    head = VICRegProjectionHead(FEATURES, HIDDEN, OUT, num_layers=3)
    criterion = VICRegLoss(lambda_param=25.0, mu_param=25.0, nu_param=1.0, eps=1e-4)

    return one_head_sides(ours, "expander", backbone, head, criterion, atol=ATOL)


def test_vicreg_steps_equal_lightly() -> None:
    """Loss, gradients, weights and BatchNorm buffers equal lightly's at each of STEPS SGD steps."""
    require_lightly()
    losses = vicreg_sides().lockstep(random_views())
    assert len(set(losses)) == STEPS


@pytest.mark.parametrize("side", ["selfsup", "lightly"])
def test_vicreg_lockstep_fails_on_a_perturbed_loss(side: str) -> None:
    """The comparison can fail: either side's loss scaled by 1 + 1e-3 is refused."""
    require_lightly()
    with pytest.raises(AssertionError):
        vicreg_sides().lockstep(random_views(), perturb=side)
