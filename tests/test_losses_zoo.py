"""The method-zoo losses against their papers' equations written out with plain loops in float64."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from selfsup.losses import (
    barlow_twins,
    beta_vae_elbo,
    dino,
    info_nce,
    moco_v3_contrastive,
    negative_cosine,
    sinkhorn,
    swav,
    swav_multicrop,
    vicreg,
    vicreg_terms,
)

# ---------------------------------------------------------------------------------------------------
# Plain-Python references (lists of floats, float64, no torch ops on the loss path).


def rows(t: torch.Tensor) -> list[list[float]]:
    return t.double().tolist()


def unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def log_softmax(v: list[float]) -> list[float]:
    m = max(v)
    lse = m + math.log(sum(math.exp(x - m) for x in v))
    return [x - lse for x in v]


def column(m: list[list[float]], j: int) -> list[float]:
    return [r[j] for r in m]


def ref_info_nce(q, k, queue, t: float) -> float:
    """MoCo eq. 1: L_q = -log exp(q.k+/T) / (exp(q.k+/T) + sum_i exp(q.k_i/T)), normalised vectors."""
    negatives = [unit(v) for v in rows(queue)]
    total = 0.0
    for qi, ki in zip(rows(q), rows(k), strict=True):
        qi, ki = unit(qi), unit(ki)
        pos = math.exp(dot(qi, ki) / t)
        total += -math.log(pos / (pos + sum(math.exp(dot(qi, v) / t) for v in negatives)))
    return total / q.shape[0]


def ref_negative_cosine(p, z) -> float:
    return -sum(dot(unit(a), unit(b)) for a, b in zip(rows(p), rows(z), strict=True)) / p.shape[0]


def ref_vicreg(z1, z2, sim_w: float, var_w: float, cov_w: float, eps: float) -> tuple[float, float, float, float]:
    """Bardes et al. eq. 1-6 with the official code's halving of the variance term."""
    a, b = rows(z1), rows(z2)
    n, d = len(a), len(a[0])
    inv = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    var = cov = 0.0
    for z in (a, b):
        means = [sum(column(z, j)) / n for j in range(d)]
        c = [[sum((z[i][j] - means[j]) * (z[i][m] - means[m]) for i in range(n)) / (n - 1) for m in range(d)]
             for j in range(d)]  # fmt: skip
        var += sum(max(0.0, 1.0 - math.sqrt(c[j][j] + eps)) for j in range(d)) / d / 2
        cov += sum(c[j][m] ** 2 for j in range(d) for m in range(d) if j != m) / d
    return sim_w * inv + var_w * var + cov_w * cov, inv, var, cov


def ref_barlow(z1, z2, lambd: float, eps: float = 1e-5) -> float:
    """Zbontar et al. eq. 1-2, embeddings standardised with the biased variance (BatchNorm1d, training)."""

    def standardise(z: list[list[float]]) -> list[list[float]]:
        n, d = len(z), len(z[0])
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            col = column(z, j)
            mean = sum(col) / n
            var = sum((x - mean) ** 2 for x in col) / n
            for i in range(n):
                out[i][j] = (z[i][j] - mean) / math.sqrt(var + eps)
        return out

    a, b = standardise(rows(z1)), standardise(rows(z2))
    n, d = len(a), len(a[0])
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[s][i] * b[s][j] for s in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def ref_sinkhorn(scores, eps: float, iters: int) -> list[list[float]]:
    """SwAV Algorithm 1: Q = exp(S/eps)^T [K, B]; sum 1; rows to 1/K, columns to 1/B; return B * Q^T."""
    s = rows(scores)
    b, k = len(s), len(s[0])
    q = [[math.exp(s[i][j] / eps) for i in range(b)] for j in range(k)]
    total = sum(map(sum, q))
    q = [[x / total for x in r] for r in q]
    for _ in range(iters):
        q = [[x / sum(r) / k for x in r] for r in q]
        col_sums = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / col_sums[i] / b for i in range(b)] for j in range(k)]
    return [[b * q[j][i] for j in range(k)] for i in range(b)]


def ref_cross_entropy(target: list[list[float]], logits: list[list[float]], t: float) -> float:
    """-mean_b sum_k target * log_softmax(logits / t)."""
    total = 0.0
    for tr, lr in zip(target, logits, strict=True):
        total -= dot(tr, log_softmax([x / t for x in lr]))
    return total / len(target)


def ref_swav(scores: list[torch.Tensor], codes: list[torch.Tensor], t: float) -> float:
    """Official main_swav.py: for each assigned crop, average the CE over the other crops; average over codes."""
    s, q = [rows(x) for x in scores], [rows(x) for x in codes]
    loss = 0.0
    for i in range(len(q)):
        others = [v for v in range(len(s)) if v != i]
        loss += sum(ref_cross_entropy(q[i], s[v], t) for v in others) / len(others)
    return loss / len(q)


def ref_dino(student: list[torch.Tensor], teacher: list[torch.Tensor], center, ts: float, tt: float) -> float:
    c = center.double().flatten().tolist()
    total, terms = 0.0, 0
    for i, t in enumerate(teacher):
        probs = [
            [math.exp(x) for x in log_softmax([(x - cj) / tt for x, cj in zip(r, c, strict=True)])] for r in rows(t)
        ]
        for v, s in enumerate(student):
            if v != i:
                total += ref_cross_entropy(probs, rows(s), ts)
                terms += 1
    return total / terms


def ref_beta_vae(x, x_rec, mu, logvar, beta: float, likelihood: str, capacity: float | None) -> tuple[float, ...]:
    xs, rs = x.double().flatten(1).tolist(), x_rec.double().flatten(1).tolist()
    recon = 0.0
    for xi, ri in zip(xs, rs, strict=True):
        for a, logit in zip(xi, ri, strict=True):
            if likelihood == "gaussian":
                recon += 0.5 * (a - logit) ** 2
            else:
                p = 1 / (1 + math.exp(-logit))
                recon -= a * math.log(p) + (1 - a) * math.log(1 - p)
    recon /= len(xs)
    kl = 0.0
    for m_row, lv_row in zip(rows(mu), rows(logvar), strict=True):
        for m, lv in zip(m_row, lv_row, strict=True):  # KL(N(m, s^2) || N(0, 1)) = 0.5 (s^2 + m^2 - 1 - log s^2)
            kl += 0.5 * (math.exp(lv) + m * m - 1 - lv)
    kl /= mu.shape[0]
    reg = kl if capacity is None else abs(kl - capacity)
    return recon + beta * reg, recon, kl


# ---------------------------------------------------------------------------------------------------
# info_nce


@pytest.mark.parametrize("n,d,k,t", [(1, 3, 4, 0.2), (5, 8, 7, 0.07), (6, 2, 1, 1.0), (3, 5, 0, 0.5)])
def test_info_nce_matches_equation(n, d, k, t):
    torch.manual_seed(n + d + k)
    q, key, queue = torch.randn(n, d), torch.randn(n, d), torch.randn(k, d)
    assert info_nce(q, key, queue, t).item() == pytest.approx(ref_info_nce(q, key, queue, t), rel=1e-5, abs=1e-6)


def test_info_nce_hand_checkable_orthogonal_queue():
    # k = q (scaled: normalised away), queue orthogonal to every query: logits [1/T, 0, 0].
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.6, 0.8, 0.0, 0.0]])
    queue = torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    t = 0.2
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert info_nce(q, 3 * q, queue, t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_gradients_and_permutation():
    torch.manual_seed(0)
    q, k = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    queue = torch.randn(5, 4)
    loss = info_nce(q, k, queue)
    loss.backward()
    assert q.grad is not None and k.grad is not None  # the key is not detached inside
    perm = torch.randperm(6)
    assert info_nce(q[perm], k[perm], queue[torch.randperm(5)]).item() == pytest.approx(loss.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# negative_cosine


@pytest.mark.parametrize("n,d", [(1, 1), (1, 5), (7, 3)])
def test_negative_cosine_matches_equation_and_byol_form(n, d):
    torch.manual_seed(n * 10 + d)
    p, z = torch.randn(n, d), torch.randn(n, d)
    loss = negative_cosine(p, z).item()
    assert loss == pytest.approx(ref_negative_cosine(p, z), rel=1e-5, abs=1e-6)
    # BYOL's ||p/|p| - z/|z|||^2 = 2 - 2 cos = 2 + 2 * D.
    byol = (
        sum(
            sum((a - b) ** 2 for a, b in zip(unit(pi), unit(zi), strict=True))
            for pi, zi in zip(rows(p), rows(z), strict=True)
        )
        / n
    )
    assert 2 + 2 * loss == pytest.approx(byol, rel=1e-5, abs=1e-6)


def test_negative_cosine_stops_gradient_on_target():
    torch.manual_seed(1)
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    loss = negative_cosine(p, z)
    loss.backward()
    assert p.grad is not None and z.grad is None
    assert negative_cosine(p, 2 * p).item() == pytest.approx(-1.0, rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# vicreg


@pytest.mark.parametrize("n,d", [(2, 1), (3, 4), (8, 5)])
def test_vicreg_matches_equation(n, d):
    torch.manual_seed(n * d)
    z1, z2 = 0.7 * torch.randn(n, d), 0.7 * torch.randn(n, d) + 0.3
    expected, inv, var, cov = ref_vicreg(z1, z2, 25.0, 25.0, 1.0, 1e-4)
    assert vicreg(z1, z2).item() == pytest.approx(expected, rel=1e-5)
    terms = vicreg_terms(z1, z2)
    assert terms["invariance"].item() == pytest.approx(inv, rel=1e-5)
    assert terms["variance"].item() == pytest.approx(var, rel=1e-5, abs=1e-7)
    assert terms["covariance"].item() == pytest.approx(cov, rel=1e-5, abs=1e-7)
    assert vicreg(z1, z2, 2.0, 3.0, 0.5, 1e-3).item() == pytest.approx(
        ref_vicreg(z1, z2, 2.0, 3.0, 0.5, 1e-3)[0], rel=1e-5
    )


def test_vicreg_hand_checkable_cases():
    # Identical, centred, decorrelated embeddings with std > 1: every term is zero.
    z = 2 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert vicreg(z, z.clone()).item() == pytest.approx(0.0, abs=1e-7)
    # Collapsed embeddings: std = sqrt(eps), variance term 1 - sqrt(eps) (branches averaged), no covariance.
    c = torch.ones(5, 3)
    terms = vicreg_terms(c, c.clone())
    assert terms["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-6)
    assert terms["covariance"].item() == 0.0 and terms["invariance"].item() == 0.0


@pytest.mark.parametrize("loss_fn,n,d,seed", [(vicreg, 6, 4, 2), (barlow_twins, 7, 5, 3)])
def test_batch_statistics_losses_need_two_samples_permutation_and_gradients(loss_fn, n, d, seed):
    with pytest.raises(ValueError, match="at least 2"):
        loss_fn(torch.randn(1, d), torch.randn(1, d))
    torch.manual_seed(seed)
    z1, z2 = torch.randn(n, d, requires_grad=True), torch.randn(n, d, requires_grad=True)
    loss = loss_fn(z1, z2)
    loss.backward()
    assert z1.grad is not None and z2.grad is not None
    perm = torch.randperm(n)
    assert loss_fn(z1[perm], z2[perm]).item() == pytest.approx(loss.item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# barlow_twins


@pytest.mark.parametrize("n,d,lambd", [(2, 1, 5e-3), (3, 4, 5e-3), (9, 6, 0.1)])
def test_barlow_matches_equation(n, d, lambd):
    torch.manual_seed(n + 100 * d)
    z1, z2 = torch.randn(n, d), torch.randn(n, d) * 3 + 1
    assert barlow_twins(z1, z2, lambd).item() == pytest.approx(ref_barlow(z1, z2, lambd), rel=1e-5, abs=1e-7)


def test_barlow_hand_checkable_cases():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    # Identical decorrelated inputs: C = I up to BatchNorm's eps (C_ii = var / (var + eps)).
    assert barlow_twins(z, z.clone()).item() == pytest.approx(0.0, abs=1e-9)
    # Perfectly anti-correlated: C = -I -> d * (1 - (-1))^2 = 4 d.
    assert barlow_twins(z, -z).item() == pytest.approx(8.0, rel=1e-4)
    # Invariant to per-dimension affine maps of either branch (standardisation).
    assert barlow_twins(3 * z + 1, z).item() == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# sinkhorn


@pytest.mark.parametrize("b,k,eps,iters", [(1, 3, 0.05, 3), (4, 3, 0.05, 3), (6, 10, 0.1, 1), (5, 2, 0.5, 7)])
def test_sinkhorn_matches_algorithm(b, k, eps, iters):
    torch.manual_seed(b * k)
    scores = torch.rand(b, k) * 2 - 1  # cosine-like scores, as in SwAV
    codes = sinkhorn(scores, eps, iters)
    assert codes.shape == (b, k) and codes.dtype == torch.float32 and not codes.requires_grad
    torch.testing.assert_close(
        codes.double(), torch.tensor(ref_sinkhorn(scores, eps, iters), dtype=torch.float64), rtol=1e-4, atol=1e-6
    )


def test_sinkhorn_marginals_and_equipartition():
    torch.manual_seed(4)
    b, k = 12, 4
    codes = sinkhorn(torch.randn(b, k), eps=0.5, iters=200)
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(b))  # each sample's code is a distribution
    torch.testing.assert_close(codes.sum(dim=0), torch.full((k,), b / k), rtol=1e-4, atol=1e-4)
    # A single iteration already makes rows sum to 1 (the column step comes last).
    torch.testing.assert_close(sinkhorn(torch.randn(b, k), iters=1).sum(dim=1), torch.ones(b))
    # Uniform scores: every sample split equally over prototypes, for any number of iterations.
    for iters in (0, 1, 3):
        torch.testing.assert_close(sinkhorn(torch.full((5, 4), 0.3), iters=iters), torch.full((5, 4), 0.25))


def test_sinkhorn_stable_for_large_scores_and_shift_invariant():
    torch.manual_seed(5)
    scores = torch.randn(6, 5)
    big = sinkhorn(scores + 1000.0, eps=0.05)  # exp(20000) would overflow without the shift
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big, sinkhorn(scores, eps=0.05), rtol=1e-3, atol=1e-5)


def test_sinkhorn_gradient_free_and_permutation_equivariant():
    torch.manual_seed(6)
    scores = torch.randn(8, 3, requires_grad=True)
    codes = sinkhorn(scores)
    assert codes.grad_fn is None
    perm = torch.randperm(8)
    torch.testing.assert_close(sinkhorn(scores[perm]), codes[perm])


def test_sinkhorn_world_sum_reproduces_the_global_batch():
    """Two simulated processes (threads) whose world_sum adds their tensors get the global codes."""
    torch.manual_seed(7)
    scores = torch.rand(10, 4) * 2 - 1
    scores[7] += 0.5  # the two shards have different maxima
    shards = [scores[:6], scores[6:]]  # unequal shard sizes are allowed too
    barrier, slots, results = threading.Barrier(2), [None, None], [None, None]

    def run(rank: int) -> None:
        def world_sum(t: torch.Tensor) -> torch.Tensor:
            slots[rank] = t.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total

        results[rank] = sinkhorn(shards[rank], eps=0.05, iters=3, world_sum=world_sum)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    torch.testing.assert_close(torch.cat(results), sinkhorn(scores, eps=0.05, iters=3), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# swav


@pytest.mark.parametrize("b,k,t", [(1, 3, 0.1), (5, 7, 0.1), (4, 2, 1.0)])
def test_swav_matches_equation(b, k, t):
    torch.manual_seed(b + k)
    sa, sb = torch.randn(b, k), torch.randn(b, k)
    qa, qb = sinkhorn(sa), sinkhorn(sb)
    expected = 0.5 * (ref_cross_entropy(rows(qb), rows(sa), t) + ref_cross_entropy(rows(qa), rows(sb), t))
    assert swav(sa, sb, qa, qb, t).item() == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(ref_swav([sa, sb], [qa, qb], t), rel=1e-12)


def test_swav_multicrop_matches_official_averaging():
    torch.manual_seed(8)
    scores = [torch.randn(3, 5) for _ in range(4)]  # 2 global + 2 local crops
    codes = [sinkhorn(s) for s in scores[:2]]
    assert swav_multicrop(scores, codes, 0.1).item() == pytest.approx(ref_swav(scores, codes, 0.1), rel=1e-5)
    with pytest.raises(ValueError):
        swav_multicrop(scores[:1], codes[:1])


def test_swav_gradients_flow_to_scores_only_and_permutation():
    torch.manual_seed(9)
    sa, sb = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    qa, qb = torch.rand(6, 4, requires_grad=True), torch.rand(6, 4, requires_grad=True)
    loss = swav(sa, sb, qa, qb)
    loss.backward()
    assert sa.grad is not None and sb.grad is not None and qa.grad is None and qb.grad is None
    perm = torch.randperm(6)
    assert swav(sa[perm], sb[perm], qa[perm], qb[perm]).item() == pytest.approx(loss.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# dino


@pytest.mark.parametrize("n_student,n_teacher,b,k", [(2, 2, 3, 5), (4, 2, 2, 6), (3, 1, 1, 4)])
def test_dino_matches_equation(n_student, n_teacher, b, k):
    torch.manual_seed(n_student * 10 + b)
    student = [torch.randn(b, k) for _ in range(n_student)]
    teacher = [torch.randn(b, k) for _ in range(n_teacher)]
    center = 0.1 * torch.randn(1, k)
    expected = ref_dino(student, teacher, center, 0.1, 0.04)
    assert dino(student, teacher, center, 0.1, 0.04).item() == pytest.approx(expected, rel=1e-5)
    assert dino(student, teacher, center.flatten(), 0.1, 0.04).item() == pytest.approx(expected, rel=1e-5)


def test_dino_identical_crops_give_mean_entropy():
    torch.manual_seed(10)
    s = torch.randn(4, 6)
    t = 0.3
    probs = torch.softmax(s.double() / t, dim=1)
    entropy = -(probs * probs.log()).sum(dim=1).mean().item()
    loss = dino([s, s.clone(), s.clone()], [s, s.clone()], torch.zeros(6), student_temperature=t, teacher_temperature=t)
    assert loss.item() == pytest.approx(entropy, rel=1e-5)


def test_dino_gradients_permutation_and_errors():
    torch.manual_seed(11)
    student = [torch.randn(5, 4, requires_grad=True) for _ in range(3)]
    teacher = [torch.randn(5, 4, requires_grad=True) for _ in range(2)]
    loss = dino(student, teacher, torch.zeros(4))
    loss.backward()
    assert all(s.grad is not None for s in student) and all(t.grad is None for t in teacher)
    perm = torch.randperm(5)
    permuted = dino([s[perm] for s in student], [t[perm] for t in teacher], torch.zeros(4))
    assert permuted.item() == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError):
        dino([torch.randn(2, 3)], [torch.randn(2, 3)], torch.zeros(3))


# ---------------------------------------------------------------------------------------------------
# beta_vae_elbo


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("beta,capacity", [(1.0, None), (4.0, None), (10.0, 0.5), (10.0, 50.0)])
def test_beta_vae_matches_equation(likelihood, beta, capacity):
    torch.manual_seed(12)
    x = torch.rand(3, 1, 2, 3)
    if likelihood == "bernoulli":
        x = (x > 0.5).float()
    x_rec, mu, logvar = torch.randn(3, 1, 2, 3), torch.randn(3, 4), 0.5 * torch.randn(3, 4)
    loss, terms = beta_vae_elbo(x, x_rec, mu, logvar, beta, likelihood, capacity)
    expected, recon, kl = ref_beta_vae(x, x_rec, mu, logvar, beta, likelihood, capacity)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert terms["recon"].item() == pytest.approx(recon, rel=1e-5)
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-5)


def test_beta_vae_hand_checkable_cases():
    x = torch.zeros(2, 5)
    loss, terms = beta_vae_elbo(x, x + 1, torch.zeros(2, 3), torch.zeros(2, 3), beta=4.0)
    assert terms["kl"].item() == 0.0  # the posterior is the prior
    assert terms["recon"].item() == pytest.approx(2.5)  # 0.5 * 5 unit errors per sample
    assert loss.item() == pytest.approx(2.5)
    # Capacity: beta * |0 - C|.
    assert beta_vae_elbo(x, x, torch.zeros(2, 3), torch.zeros(2, 3), 2.0, capacity=3.0)[0].item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="likelihood"):
        beta_vae_elbo(x, x, torch.zeros(2, 3), torch.zeros(2, 3), likelihood="laplace")


def test_beta_vae_gradients_and_permutation():
    torch.manual_seed(13)
    x = torch.rand(4, 6)
    x_rec, mu, logvar = (torch.randn(4, n, requires_grad=True) for n in (6, 2, 2))
    loss, _ = beta_vae_elbo(x, x_rec, mu, logvar, beta=2.0, likelihood="bernoulli")
    loss.backward()
    assert x_rec.grad is not None and mu.grad is not None and logvar.grad is not None
    perm = torch.randperm(4)
    permuted, _ = beta_vae_elbo(x[perm], x_rec[perm], mu[perm], logvar[perm], beta=2.0, likelihood="bernoulli")
    assert permuted.item() == pytest.approx(loss.item(), rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# bf16 autocast: float32 outputs, computed in float32 (equal to fp32 on the same bf16-rounded values).


def _cases() -> dict:
    g = torch.Generator().manual_seed(14)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    x01 = torch.rand(4, 3, 4, generator=g)
    return {
        "info_nce": (info_nce, (r(8, 16), r(8, 16), r(32, 16))),
        "negative_cosine": (negative_cosine, (r(8, 16), r(8, 16))),
        "vicreg": (vicreg, (r(8, 16), r(8, 16))),
        "barlow_twins": (barlow_twins, (r(8, 16), r(8, 16))),
        "sinkhorn": (sinkhorn, (r(8, 10).tanh(),)),
        "swav": (swav, (r(8, 10), r(8, 10), torch.softmax(r(8, 10), 1), torch.softmax(r(8, 10), 1))),
        "dino": (lambda *a: dino(list(a[:3]), list(a[3:5]), a[5]), (*[r(8, 10) for _ in range(5)], r(10))),
        "beta_vae": (lambda *a: beta_vae_elbo(*a)[0], (x01, r(4, 3, 4), r(4, 5), r(4, 5))),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_bf16_autocast_computes_in_float32(name):
    fn, args = _cases()[name]
    full = fn(*args)
    rounded = fn(*(a.bfloat16().float() for a in args))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fn(*(a.bfloat16() for a in args))
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, rounded, rtol=1e-6, atol=1e-6)  # no bf16 arithmetic inside
    torch.testing.assert_close(low, full, rtol=5e-2, atol=5e-2)  # only the inputs' rounding differs


def reference_moco_v3(q: torch.Tensor, k: torch.Tensor, t: float) -> float:
    """MoCo v3, algorithm 1: ctr(q, k) = CrossEntropy(q k^T / t, labels = range(N)) * 2t, with q and k
    normalised; written as -log softmax in plain float64 loops."""
    q, k = q.double(), k.double()
    q = [row / row.norm() for row in q]
    k = [row / row.norm() for row in k]
    total = 0.0
    for i, qi in enumerate(q):
        logits = [float(torch.dot(qi, kj)) / t for kj in k]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    return total / len(q) * 2 * t


@pytest.mark.parametrize(("n", "d", "t"), [(4, 3, 0.2), (7, 5, 1.0), (2, 8, 0.1)])
def test_moco_v3_matches_the_papers_pseudocode(n, d, t):
    torch.manual_seed(n)
    q, k = torch.randn(n, d), torch.randn(n, d)
    assert moco_v3_contrastive(q, k, t).item() == pytest.approx(reference_moco_v3(q, k, t), rel=1e-5)


def test_moco_v3_process_shares_sum_to_the_global_loss_and_gradient():
    """Each process scores its queries against the keys of the global batch (its positives at rank x n):
    the mean over processes equals the loss of the whole batch, and so do the gradients."""
    torch.manual_seed(0)
    q, k = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4)
    whole = moco_v3_contrastive(q, k, 0.2)
    (grad_whole,) = torch.autograd.grad(whole, q)
    shares = [moco_v3_contrastive(q[r * 3 : (r + 1) * 3], k, 0.2, offset=r * 3) for r in range(2)]
    (grad_shares,) = torch.autograd.grad(sum(shares) / 2, q)
    torch.testing.assert_close(sum(shares) / 2, whole)
    torch.testing.assert_close(grad_shares, grad_whole)
    with pytest.raises(ValueError, match="within k"):
        moco_v3_contrastive(q[:3], k, 0.2, offset=4)
