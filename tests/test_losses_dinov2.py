"""DINOv2's loss pieces (Oquab et al. 2023, sec. 4): Sinkhorn-Knopp centering of the teacher (`sinkhorn` with
eps = teacher temperature), the iBOT masked-patch loss (`ibot_patch`) and the KoLeo regulariser (`koleo`), against
lightly 1.6 on random inputs and by properties that hold whatever the reference.

Differences from lightly, and how the comparison bridges them:
- lightly 1.6 has no DINOv2 Sinkhorn-Knopp centering. Its SwAV `sinkhorn` (lightly/loss/swav_loss.py) is the
  algorithm of DINOv2's `sinkhorn_knopp_teacher` step for step, with epsilon = teacher temperature: compared there.
  selfsup subtracts the maximum logit first (it cancels in the first normalisation): rounding only.
- lightly's IBOTPatchLoss centres with a running mean only; it also updates its own centre after the loss, where
  selfsup takes the centre as an argument (its update is the caller's, as for `dino`): the centre is loaded into
  lightly's buffer. selfsup's centering="sinkhorn" is compared with IBOTPatchLoss fed lightly's SwAV sinkhorn
  targets as log-probabilities at temperature 1 with a zero centre, which its softmax returns unchanged.
- lightly takes the masked patches' logits [M, K] with a [n, h, w] mask; selfsup takes those or every patch's
  logits [n, L, K] with a [n, L] or [n, h, w] mask: both forms are compared.
- lightly's IBOTPatchLoss lets gradient reach the teacher's logits; selfsup detaches them (targets, as the
  official code's no_grad teacher): the student's gradients are compared, the teacher's logits carry none.
- KoLeo: lightly excludes a point from its own neighbours by a cosine of -2, selfsup by -inf, the official code
  by -1, which ties with an exactly antipodal neighbour and can pick the point itself (tested below): the same
  neighbours otherwise.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from selfsup.losses import ibot_patch, koleo, sinkhorn
from tests.equivalence.harness import require_lightly

pytestmark = pytest.mark.usefixtures("one_thread")
# fp32 on both sides, the same maths in a different order (a shifted exponential, a reciprocal against a
# division): values and gradients agree to float32 rounding.
CLOSE = {"rtol": 1e-5, "atol": 1e-7}


def cosines(rows: int, k: int, seed: int, dim: int = 8) -> torch.Tensor:
    """[rows, k] logits as DINOv2's head computes them at initialisation: normalised features against
    normalised prototypes."""
    generator = torch.Generator().manual_seed(seed)
    features = F.normalize(torch.randn(rows, dim, generator=generator), dim=1)
    prototypes = F.normalize(torch.randn(k, dim, generator=generator), dim=1)
    return features @ prototypes.T


def random_mask(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """[n, h, w] with about 40% of the patches masked, image 0 unmasked (DINOv2 masks half of the images) and
    the last image's first patch masked, so that some patch is."""
    mask = torch.rand(n, h, w, generator=torch.Generator().manual_seed(seed)) < 0.4
    mask[0] = False
    mask[-1, 0, 0] = True
    return mask


def as_processes(fn: Callable[..., torch.Tensor], shards: list[tuple]) -> list[torch.Tensor]:
    """fn(*shard, world_sum=...) for each shard in its own thread, a simulated process whose world_sum adds
    the tensors of all of them (an all_reduce). A process that fails breaks the barrier instead of hanging the
    others; its result stays None."""
    size = len(shards)
    barrier, slots, results = threading.Barrier(size, timeout=10), [None] * size, [None] * size

    def run(rank: int) -> None:
        def world_sum(t: torch.Tensor) -> torch.Tensor:
            slots[rank] = t.clone()
            barrier.wait()
            total = sum(slots)
            barrier.wait()
            return total

        results[rank] = fn(*shards[rank], world_sum=world_sum)

    threads = [threading.Thread(target=run, args=(rank,), daemon=True) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return results


# ---------------------------------------------------------------------------------------------------
# Sinkhorn-Knopp centering


@pytest.mark.parametrize("b,k,teacher_temperature", [(8, 16, 0.04), (12, 5, 0.07), (3, 64, 0.04), (20, 20, 0.1)])
def test_sinkhorn_centering_matches_lightly(b, k, teacher_temperature):
    require_lightly()
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    logits = cosines(b, k, seed=b * k)
    expected = lightly_sinkhorn(logits.clone(), iterations=3, epsilon=teacher_temperature)
    targets = sinkhorn(logits, eps=teacher_temperature, iters=3)
    torch.testing.assert_close(targets, expected, **CLOSE)


def test_sinkhorn_centering_removes_a_per_prototype_bias():
    """What the centre does in DINO: a teacher leaning towards some prototypes for every input gets the same
    targets as one that does not (exactly: the first row normalisation cancels the bias), where the softmax of
    the biased logits puts most of the mass on the favoured prototype."""
    logits = cosines(16, 8, seed=1)
    bias = torch.zeros(8)
    bias[0] = 0.5
    targets = sinkhorn(logits, eps=0.04, iters=3)
    torch.testing.assert_close(sinkhorn(logits + bias, eps=0.04, iters=3), targets, **CLOSE)
    assert F.softmax((logits + bias) / 0.04, dim=1)[:, 0].sum() > 8  # over half of 16 samples' mass, uncentred
    torch.testing.assert_close(targets.sum(dim=1), torch.ones(16))  # each target a distribution
    assert targets.sum(dim=0).max() < 2 * 16 / 8  # no prototype takes much more than its share


def test_sinkhorn_world_sum_with_an_empty_process():
    """A process without masked patches (B = 0 there) still takes part in the reductions: the other gets its
    rows of the global batch's targets."""
    logits = cosines(10, 6, seed=2)
    empty, full = as_processes(
        lambda scores, world_sum: sinkhorn(scores, eps=0.04, iters=3, world_sum=world_sum),
        [(logits[:0],), (logits,)],
    )
    assert empty.shape == (0, 6)
    torch.testing.assert_close(full, sinkhorn(logits, eps=0.04, iters=3), **CLOSE)


# ---------------------------------------------------------------------------------------------------
# iBOT patch loss


@pytest.mark.parametrize(
    "n,h,w,k,teacher_temperature,student_temperature",
    [(4, 3, 3, 16, 0.04, 0.1), (6, 2, 4, 32, 0.07, 0.1), (3, 4, 4, 8, 0.07, 0.2), (2, 1, 2, 5, 1.0, 1.0)],
)
def test_ibot_softmax_centering_matches_lightly(n, h, w, k, teacher_temperature, student_temperature):
    lightly = require_lightly()
    mask = random_mask(n, h, w, seed=n + k)
    m = int(mask.sum())
    generator = torch.Generator().manual_seed(k)
    teacher = torch.randn(m, k, generator=generator)
    center = 0.3 * torch.randn(1, k, generator=generator)
    student = torch.randn(m, k, generator=generator, requires_grad=True)

    reference = lightly.loss.IBOTPatchLoss(
        output_dim=k, teacher_temp=teacher_temperature, student_temp=student_temperature
    )
    reference.center.center = center.clone()
    student_ref = student.detach().clone().requires_grad_()
    expected = reference(teacher_out=teacher, student_out=student_ref, mask=mask)
    expected.backward()

    loss = ibot_patch(student, teacher, mask, center, student_temperature, teacher_temperature)
    loss.backward()
    torch.testing.assert_close(loss, expected, **CLOSE)
    torch.testing.assert_close(student.grad, student_ref.grad, **CLOSE)

    # Every patch's logits [n, L, K] with the mask [n, L]: the masked ones are selected, the same loss.
    flat_mask = mask.flatten(1)
    teacher_all, student_all = torch.randn(2, n, h * w, k, generator=generator)
    teacher_all[flat_mask], student_all[flat_mask] = teacher, student.detach()
    student_all.requires_grad_()
    loss_all = ibot_patch(student_all, teacher_all, flat_mask, center, student_temperature, teacher_temperature)
    loss_all.backward()
    torch.testing.assert_close(loss_all, expected, **CLOSE)
    torch.testing.assert_close(student_all.grad[flat_mask], student_ref.grad, **CLOSE)


@pytest.mark.parametrize("n,h,w,k,teacher_temperature", [(4, 3, 3, 16, 0.04), (6, 2, 4, 32, 0.07), (5, 4, 4, 8, 0.07)])
def test_ibot_sinkhorn_centering_matches_lightly(n, h, w, k, teacher_temperature):
    lightly = require_lightly()
    from lightly.loss.swav_loss import sinkhorn as lightly_sinkhorn

    mask = random_mask(n, h, w, seed=n * k)
    m = int(mask.sum())
    teacher = cosines(m, k, seed=m)
    student = torch.randn(m, k, generator=torch.Generator().manual_seed(m), requires_grad=True)

    targets = lightly_sinkhorn(teacher.clone(), iterations=3, epsilon=teacher_temperature)
    reference = lightly.loss.IBOTPatchLoss(output_dim=k, teacher_temp=1.0, student_temp=0.1)
    student_ref = student.detach().clone().requires_grad_()
    expected = reference(teacher_out=targets.log(), student_out=student_ref, mask=mask)  # softmax(log q) = q
    expected.backward()

    loss = ibot_patch(student, teacher, mask, teacher_temperature=teacher_temperature, centering="sinkhorn")
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)  # plus exp(log(q)) rounding on lightly's side
    torch.testing.assert_close(student.grad, student_ref.grad, rtol=1e-5, atol=1e-6)


def ref_ibot(student, teacher, mask, center, student_temperature, teacher_temperature) -> torch.Tensor:
    """The definition, one image at a time: each image's mean over its masked patches of -sum_k P_t log P_s,
    0 for an image without masked patches, averaged over the images."""
    per_image = []
    for s, t, m in zip(student, teacher, mask, strict=True):
        if not m.any():
            per_image.append(torch.zeros(()))
            continue
        targets = F.softmax((t[m] - center) / teacher_temperature, dim=1)
        per_image.append(-(targets * F.log_softmax(s[m] / student_temperature, dim=1)).sum(dim=1).mean())
    return torch.stack(per_image).mean()


@pytest.mark.parametrize("n,patches,k", [(4, 9, 16), (3, 16, 5)])
def test_ibot_is_the_mean_over_images_of_each_images_mean_over_its_masked_patches(n, patches, k):
    mask = random_mask(n, patches, 1, seed=patches).flatten(1)
    mask[1] = False
    mask[1, 2] = True  # an image with one masked patch weighs as much as one with many
    generator = torch.Generator().manual_seed(n)
    student, teacher, center = (
        torch.randn(*shape, generator=generator) for shape in ((n, patches, k), (n, patches, k), (k,))
    )
    expected = ref_ibot(student, teacher, mask, center, 0.1, 0.07)
    torch.testing.assert_close(ibot_patch(student, teacher, mask, center), expected, **CLOSE)
    # An image without masked patches still counts, as 0 (the official code divides by every image).
    assert not mask[0].any()
    torch.testing.assert_close(ibot_patch(student[1:], teacher[1:], mask[1:], center), expected * n / (n - 1), **CLOSE)


@pytest.mark.parametrize("centering", ["softmax", "sinkhorn"])
def test_ibot_ignores_the_unmasked_patches(centering):
    """Changing visible patches' logits, the student's or the teacher's, changes neither the loss nor any
    gradient (nor the Sinkhorn targets of the masked patches, which are normalised over masked patches only)."""
    n, patches, k = 4, 9, 12
    mask = random_mask(n, 3, 3, seed=5).flatten(1)
    student = torch.randn(n, patches, k, generator=torch.Generator().manual_seed(0))
    teacher = cosines(n * patches, k, seed=1).reshape(n, patches, k)
    center = torch.randn(k) if centering == "softmax" else None

    def loss_and_grad(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        student = student.clone().requires_grad_()
        loss = ibot_patch(student, teacher, mask, center, centering=centering)
        loss.backward()
        return loss, student.grad

    loss, grad = loss_and_grad(student, teacher)
    visible = ~mask
    other_student, other_teacher = student.clone(), teacher.clone()
    other_student[visible] = 5 * torch.randn(int(visible.sum()), k)
    other_teacher[visible] = -other_teacher[visible]
    other_loss, other_grad = loss_and_grad(other_student, other_teacher)
    torch.testing.assert_close(other_loss, loss, **CLOSE)
    torch.testing.assert_close(other_grad, grad, **CLOSE)
    assert (grad[visible] == 0).all() and (grad[mask] != 0).any()


def test_ibot_sinkhorn_over_processes_equals_the_global_batch():
    """Two simulated processes with equal numbers of images, one without any masked patch: the mean of their
    losses (data parallelism averages gradients) is the loss of the whole batch, the Sinkhorn targets being
    normalised over every process's masked patches."""
    n, patches, k = 6, 4, 8
    mask = random_mask(n, patches, 1, seed=3).flatten(1)
    mask[:3] = False
    student = torch.randn(n, patches, k, generator=torch.Generator().manual_seed(3))
    teacher = cosines(n * patches, k, seed=4).reshape(n, patches, k)

    def loss(student, teacher, mask, world_sum=None):
        return ibot_patch(student, teacher, mask, centering="sinkhorn", world_sum=world_sum)

    shards = [(student[:3], teacher[:3], mask[:3]), (student[3:], teacher[3:], mask[3:])]
    per_process = as_processes(loss, shards)
    torch.testing.assert_close((per_process[0] + per_process[1]) / 2, loss(student, teacher, mask), **CLOSE)


def test_ibot_detaches_the_teacher_and_computes_in_float32():
    mask = random_mask(3, 2, 2, seed=7)
    student = torch.randn(3, 4, 6, requires_grad=True)
    teacher = torch.randn(3, 4, 6, requires_grad=True)
    center = torch.zeros(6)
    loss = ibot_patch(student, teacher, mask.flatten(1), center)
    loss.backward()
    assert teacher.grad is None and student.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = ibot_patch(student.bfloat16(), teacher.bfloat16(), mask, center, centering="softmax")
    assert in_autocast.dtype == torch.float32
    expected = ibot_patch(student.bfloat16().float(), teacher.bfloat16().float(), mask, center)
    torch.testing.assert_close(in_autocast, expected)


def test_ibot_rejects_inconsistent_inputs():
    mask = random_mask(2, 2, 2, seed=1)
    m = int(mask.sum())
    logits, center = torch.randn(m, 4), torch.zeros(4)
    with pytest.raises(ValueError, match="needs the running `center`"):
        ibot_patch(logits, logits, mask)
    with pytest.raises(ValueError, match="unknown centering"):
        ibot_patch(logits, logits, mask, centering="mean")
    with pytest.raises(ValueError, match="logits for"):
        ibot_patch(logits[1:], logits[1:], mask, center)
    with pytest.raises(ValueError, match="do not match the mask"):
        ibot_patch(torch.randn(2, 3, 4), torch.randn(2, 3, 4), mask, center)
    with pytest.raises(ValueError, match="center of 3 entries"):
        ibot_patch(logits, logits, mask, torch.zeros(3))


# ---------------------------------------------------------------------------------------------------
# KoLeo


@pytest.mark.parametrize("n,d,duplicate", [(2, 3, False), (8, 16, False), (32, 4, False), (6, 5, True)])
def test_koleo_matches_lightly(n, d, duplicate):
    lightly = require_lightly()
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n * d))
    if duplicate:  # coinciding points: the eps terms decide the value and its gradient
        x[1] = x[0]
    x_ref, x = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = lightly.loss.KoLeoLoss()(x_ref)
    expected.backward()
    loss = koleo(x)
    loss.backward()
    torch.testing.assert_close(loss, expected, **CLOSE)
    torch.testing.assert_close(x.grad, x_ref.grad, **CLOSE)


def test_koleo_of_known_configurations():
    """Exact values: points on a circle at angles 0, 0.1 and pi (the first two are each other's neighbours at
    2 sin(0.05); the third's nearest is the second, at 2 cos(0.05)), an antipodal pair (each other's neighbour at
    distance 2, though the official -1 diagonal ties with it) and an orthonormal basis (sqrt 2 apart)."""
    angles = torch.tensor([0.0, 0.1, math.pi])
    circle = torch.stack([angles.cos(), angles.sin()], dim=1) * torch.tensor([[1.0], [3.0], [0.5]])  # norms ignored
    expected = -(2 * math.log(2 * math.sin(0.05)) + math.log(2 * math.cos(0.05))) / 3
    assert koleo(circle).item() == pytest.approx(expected, rel=1e-5)
    assert koleo(torch.tensor([[1.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])).item() == pytest.approx(-math.log(2), rel=1e-6)
    assert koleo(torch.eye(5)).item() == pytest.approx(-0.5 * math.log(2), rel=1e-6)


def test_koleo_penalises_collapse_and_rewards_spread():
    d = 8
    identical = torch.ones(4, d)  # collapsed: -log(||eps||_2 + eps) = -log(eps (sqrt(d) + 1))
    assert koleo(identical).item() == pytest.approx(-math.log(1e-8 * (math.sqrt(d) + 1)), rel=1e-4)
    assert koleo(identical).item() > 15
    generator = torch.Generator().manual_seed(0)
    clustered = torch.ones(d, d) + 0.01 * torch.randn(d, d, generator=generator)
    spread = torch.linalg.qr(torch.randn(d, d, generator=generator))[0]  # orthonormal rows
    assert koleo(spread) < koleo(torch.randn(d, d, generator=generator)) < koleo(clustered)
    # A gradient step on the loss spreads a cluster: its smallest pairwise distance grows.
    x = clustered.clone().requires_grad_()
    koleo(x).backward()
    step = F.normalize(x.detach() - 1e-3 * x.grad, dim=1)
    before = torch.pdist(F.normalize(clustered, dim=1)).min()
    assert torch.pdist(step).min() > before


def test_koleo_computes_in_float32_and_rejects_a_lone_sample():
    x = torch.randn(6, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_autocast = koleo(x)
    assert in_autocast.dtype == torch.float32
    torch.testing.assert_close(in_autocast, koleo(x))
    with pytest.raises(ValueError, match="n >= 2"):
        koleo(torch.randn(1, 4))
    with pytest.raises(ValueError, match="n >= 2"):
        koleo(torch.randn(4))
