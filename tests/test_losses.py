"""NT-Xent against the paper's equation written out directly, and its multi-process decomposition."""

import math

import pytest
import torch

from selfsup.losses import nt_xent


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Chen et al. 2020, eq. 1: l(i,j) = -log exp(sim(z_i,z_j)/t) / sum_{k != i} exp(sim(z_i,z_k)/t),
    averaged over all 2N ordered positive pairs, with sim the cosine similarity."""
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        j = (i + n) % n2
        sim = [float(torch.dot(z[i], z[k]) / (z[i].norm() * z[k].norm())) for k in range(n2)]
        denom = sum(math.exp(sim[k] / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(sim[j] / t) / denom)
    return total / n2


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (7, 16, 1.0)])
def test_nt_xent_matches_equation(n, d, t):
    torch.manual_seed(n * d)
    z1, z2 = torch.randn(n, d), torch.randn(n, d)
    assert nt_xent(z1, z2, t).item() == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5)


def test_nt_xent_hand_checkable_case():
    # Two images, views identical, the images orthogonal: each anchor sees its positive at cosine 1
    # and two negatives at cosine 0 -> loss = -log(e^(1/t) / (e^(1/t) + 2)).
    z = torch.eye(2)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_invariant_to_scale_and_pair_permutation():
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    base = nt_xent(z1, z2, 0.2)
    perm = torch.randperm(6)
    assert nt_xent(3 * z1[perm], 0.5 * z2[perm], 0.2).item() == pytest.approx(base.item(), rel=1e-5)


def test_split_across_processes_equals_global_loss_and_gradient():
    """What each DDP process computes (local anchors, gathered keys) averages to the global loss."""
    torch.manual_seed(1)
    z1, z2 = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5, requires_grad=True)
    global_loss = nt_xent(z1, z2, 0.3)
    g1, g2 = torch.autograd.grad(global_loss, [z1, z2])
    world, n = 2, 4
    parts = [nt_xent(z1[r * n : (r + 1) * n], z2[r * n : (r + 1) * n], 0.3, z1, z2, offset=r * n) for r in range(world)]
    split_loss = sum(parts) / world
    s1, s2 = torch.autograd.grad(split_loss, [z1, z2])
    assert split_loss.item() == pytest.approx(global_loss.item(), rel=1e-6)
    torch.testing.assert_close(s1, g1)
    torch.testing.assert_close(s2, g2)


def test_nt_xent_bf16_inputs_computed_in_float32():
    torch.manual_seed(2)
    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    full = nt_xent(z1, z2, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.5)
    assert low.dtype == torch.float32
    # Exactly the float32 loss of the bf16-rounded inputs: no bf16 matmul inside.
    assert low.item() == pytest.approx(nt_xent(z1.bfloat16().float(), z2.bfloat16().float(), 0.5).item(), rel=1e-6)
    assert low.item() == pytest.approx(full.item(), rel=2e-2)
