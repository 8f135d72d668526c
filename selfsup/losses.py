"""Self-supervised losses as pure functions of tensors, importable alone.

Each loss computes in float32 whatever the autocast dtype, because the exponentials and
normalisations in these objectives lose too much precision in bf16/fp16."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def nt_xent(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    keys1: torch.Tensor | None = None,
    keys2: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, eq. 1).

    z1[i] and z2[i] are the embeddings of two views of image i. Each of the 2n embeddings is an anchor
    whose positive is the other view of its image and whose negatives are the other 2N - 2 embeddings;
    the loss is the mean over anchors. Under data parallelism pass the embeddings gathered from all
    processes as keys1/keys2 ([N, d]) and this process's position in them as `offset`: averaging the
    per-process losses then equals the loss over the global batch.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent expects two [n, d] tensors of equal shape, got {tuple(z1.shape)}, {tuple(z2.shape)}")
    keys1 = z1 if keys1 is None else keys1
    keys2 = z2 if keys2 is None else keys2
    n, total = z1.shape[0], keys1.shape[0]
    with _float32_region(z1):
        anchors = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        keys = F.normalize(torch.cat([keys1, keys2]).float(), dim=1)
        logits = anchors @ keys.T / temperature
        local = torch.arange(n, device=z1.device) + offset
        self_index = torch.cat([local, local + total])
        positive_index = torch.cat([local + total, local])
        logits = logits.scatter(1, self_index[:, None], float("-inf"))  # a scalar: no host-to-device copy
        return F.cross_entropy(logits, positive_index)


# ---------------------------------------------------------------------------------------------------
# The method zoo. Every function below casts its inputs to float32 and switches autocast off for its
# own body, so that matmuls (which autocast would run in bf16) also stay in float32.


def _float32_region(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which autocast is off for t's device type (a no-op where autocast does not exist)."""
    device_type = t.device.type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor, min_rows: int = 1) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{name} expects two [n, d] tensors of equal shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs a batch of at least {min_rows} samples (batch statistics), got {a.shape[0]}")


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    """The off-diagonal entries of a square matrix, flattened."""
    return m[~torch.eye(m.shape[0], dtype=torch.bool, device=m.device)]


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of MoCo (He et al. 2020, eq. 1; MoCo v2, Chen et al. 2020, uses T = 0.2).

    q: [n, d] queries from the online encoder; k: [n, d] keys from the momentum encoder (q[i]'s
    positive); queue: [K, d] negatives, one per row (the official code stores its queue as [d, K]:
    pass its transpose). All three are L2-normalised here; logits are [q.k, q.queue^T] / T and the
    loss is the cross-entropy with target 0, averaged over the n queries. Nothing is detached: the
    keys and queue carry no gradient when they come from a momentum encoder under no_grad, as in the
    official code. K = 0 is allowed (the loss is then 0).
    """
    _check_pair("info_nce", q, k)
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce expects a [K, {q.shape[1]}] queue, got {tuple(queue.shape)}")
    with _float32_region(q):
        q, k, queue = (F.normalize(t.float(), dim=1) for t in (q, k, queue))
        positive = (q * k).sum(dim=1, keepdim=True)
        logits = torch.cat([positive, q @ queue.T], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)


def moco_v3_contrastive(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, offset: int = 0) -> torch.Tensor:
    """MoCo v3's ctr(q, k) (Chen, Xie & He 2021, algorithm 1): cross-entropy of q's cosine logits against
    every key of the (global) batch, the positive of q[i] being k[offset + i], scaled by 2T as in the paper.

    q: [n, d] queries (this process's); k: [N, d] keys of all processes, from the momentum encoder, carrying
    no gradient; offset: where this process's keys start in k (rank x n). Both are L2-normalised here."""
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1] or not 0 <= offset <= k.shape[0] - q.shape[0]:
        raise ValueError(
            f"moco_v3_contrastive expects q [n, d] within k [N, d], got {tuple(q.shape)}, {tuple(k.shape)}"
        )
    with _float32_region(q):
        q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
        logits = q @ k.T / temperature
        target = torch.arange(q.shape[0], device=q.device) + offset
        return F.cross_entropy(logits, target) * 2 * temperature


def mae_reconstruction(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """MAE's loss (He et al. 2022, section 3): the mean squared error of the predicted pixels of the masked
    patches only. pred, target: [n, L, p*p*3] (patchified); mask: [n, L], 1 where a patch was masked. With
    `norm_pix` each target patch is standardised by its own mean and variance (the paper's better variant)."""
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"mae_reconstruction expects pred and target [n, L, P] and mask [n, L], got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}"
        )
    with _float32_region(pred):
        pred, target, mask = pred.float(), target.float(), mask.float()
        if norm_pix:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + eps) ** 0.5
        per_patch = ((pred - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -cos(p, stopgrad(z)), averaged over the batch (SimSiam, Chen & He 2021, eq. 1-2).

    p: [n, d] predictor outputs, z: [n, d] target projections. The stop-gradient on z is part of the
    loss (SimSiam eq. 3 is what keeps it from collapsing), so z is detached here and receives no
    gradient. The symmetrised SimSiam loss is 0.5 * (D(p1, z2) + D(p2, z1)). BYOL (Grill et al. 2020,
    eq. 2) writes the same objective as ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z): an affine map of this
    one (2 + 2 * D), with the same minimisers and twice the gradient.
    """
    _check_pair("negative_cosine", p, z)
    with _float32_region(p):
        p = F.normalize(p.float(), dim=1)
        z = F.normalize(z.detach().float(), dim=1)
        return -(p * z).sum(dim=1).mean()


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> dict[str, torch.Tensor]:
    """The three unweighted terms of VICReg (Bardes et al. 2022, eq. 1-6), as the official code computes them.

    z1, z2: [n, d] embeddings of two views, n >= 2. Returns
      invariance: mean squared error between z1 and z2 (eq. 5, averaged over the n * d entries);
      variance:   mean over dims of max(0, 1 - sqrt(Var(z^j) + eps)) (eq. 1-2, gamma = 1, unbiased
                  variance), averaged over the two branches (the paper writes the sum v(Z) + v(Z');
                  the official code halves it, and the published coefficients go with the code);
      covariance: sum of squared off-diagonal entries of the covariance matrix (unbiased, n - 1) / d
                  (eq. 3-4), summed over the two branches.
    Under data parallelism pass embeddings gathered across processes (`selfsup.dist.gather_with_grad`),
    as the official code does, so the statistics are over the global batch.
    """
    _check_pair("vicreg", z1, z2, min_rows=2)
    with _float32_region(z1):
        z1, z2 = z1.float(), z2.float()
        n, d = z1.shape
        invariance = F.mse_loss(z1, z2)
        variance = z1.new_zeros(())
        covariance = z1.new_zeros(())
        for z in (z1, z2):
            z = z - z.mean(dim=0)
            std = torch.sqrt(z.var(dim=0) + eps)
            variance = variance + F.relu(1.0 - std).mean() / 2
            cov = z.T @ z / (n - 1)
            covariance = covariance + _off_diagonal(cov).pow(2).sum() / d
        return {"invariance": invariance, "variance": variance, "covariance": covariance}


def vicreg(
    z1: torch.Tensor,
    z2: torch.Tensor,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    eps: float = 1e-4,
) -> torch.Tensor:
    """VICReg (Bardes et al. 2022, eq. 6): sim_weight * invariance + var_weight * variance + cov_weight *
    covariance, with the terms of `vicreg_terms` (which see, also for n >= 2 and data parallelism)."""
    terms = vicreg_terms(z1, z2, eps=eps)
    return sim_weight * terms["invariance"] + var_weight * terms["variance"] + cov_weight * terms["covariance"]


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, eq. 1-2): sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2.

    z1, z2: [n, d] embeddings of two views, n >= 2. Each is standardised along the batch as the
    official code's BatchNorm1d(affine=False) does in training mode: (z - mean) / sqrt(var + eps) with
    the biased variance; C = z1n^T z2n / n is the [d, d] cross-correlation matrix. Under data
    parallelism pass embeddings gathered across processes (`selfsup.dist.gather_with_grad`): the
    official code's SyncBatchNorm + all_reduce(C) computes the same global-batch statistics.
    """
    _check_pair("barlow_twins", z1, z2, min_rows=2)
    with _float32_region(z1):
        n = z1.shape[0]
        z1n, z2n = (F.batch_norm(z.float(), None, None, training=True, eps=eps) for z in (z1, z2))
        c = z1n.T @ z2n / n
        on_diagonal = (1.0 - torch.diagonal(c)).pow(2).sum()
        return on_diagonal + lambd * _off_diagonal(c).pow(2).sum()


def sinkhorn(
    scores: torch.Tensor,
    eps: float = 0.05,
    iters: int = 3,
    world_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sinkhorn-Knopp equipartition of SwAV (Caron et al. 2020, eq. 3-5 and Algorithm 1's
    `distributed_sinkhorn`), returning soft codes for the prototype scores.

    scores: [B, K] scores of B samples against K prototypes (the official code passes the cosine
    similarities of normalised features and prototypes). Q = exp(scores / eps)^T is scaled to sum 1,
    then `iters` times its rows (prototypes) are scaled to sum 1/K and its columns (samples) to 1/B;
    returned is B * Q^T: [B, K], float32, each row summing to 1, each prototype receiving about B/K.

    Computed without gradient (the codes are targets) in float32, after subtracting the maximum score,
    a constant that cancels in the first normalisation. Under data parallelism pass `world_sum`, a
    function returning the sum of a tensor over processes (e.g. `lambda t: (dist.all_reduce(t), t)[1]`):
    it reduces the total, the prototype sums and the batch size, and the shift becomes the mean of the
    processes' maxima, the same on every process, so each process returns its rows of the codes of the
    global batch. (Stable while no process's maximum exceeds that mean by ~80 * eps, e.g. always for
    cosine scores with eps >= 0.025.) A process may hold no samples (B = 0 there, e.g. no masked patch in
    its batch for `ibot_patch`): it still takes part in every reduction and returns its [0, K] rows.

    DINOv2 (Oquab et al. 2023, sec. 4; official `sinkhorn_knopp_teacher`) centres its teacher with this same
    algorithm in place of DINO's running centre: scores are the teacher's logits, eps the teacher temperature
    and iters 3, over the global crops' class-token logits of the global batch (and, separately, over its
    masked patches' logits, see `ibot_patch`). Those logits are cosines times the prototypes' learnt norms
    (a weight-normalised last layer on normalised features, the norms 1 at initialisation).
    """
    if scores.ndim != 2:
        raise ValueError(f"sinkhorn expects [B, K] scores, got {tuple(scores.shape)}")
    reduce = world_sum if world_sum is not None else (lambda t: t)
    with torch.no_grad(), _float32_region(scores):
        logits = scores.detach().float() / eps
        has_rows = logits.shape[0] > 0  # an empty shard adds nothing to the mean of the maxima
        local_max = logits.max().reshape(1) if has_rows else logits.new_zeros(1)
        shift = reduce(local_max) / reduce(logits.new_full((1,), float(has_rows)))
        q = torch.exp(logits - shift).T  # [K, B]
        k = q.shape[0]
        b = reduce(logits.new_full((1,), float(q.shape[1])))
        q = q / reduce(q.sum().reshape(1))
        for _ in range(iters):
            q = q / reduce(q.sum(dim=1, keepdim=True)) / k
            q = q / q.sum(dim=0, keepdim=True) / b
        return (q * b).T


def swav_multicrop(
    scores: Sequence[torch.Tensor], codes: Sequence[torch.Tensor], temperature: float = 0.1
) -> torch.Tensor:
    """SwAV's swapped prediction over any number of crops (Caron et al. 2020, eq. 1-2, multi-crop).

    scores: one [B, K] prototype-score tensor per crop; codes: [B, K] codes (from `sinkhorn`, without
    gradient) of the first len(codes) crops, the crops used for assignment. For each code q_i the loss
    averages -mean_b sum_k q_i * log_softmax(scores_v / T) over the other crops v != i; these averages
    are then averaged over the codes, as in the official code.
    """
    if not codes or len(codes) > len(scores) or len(scores) < 2:
        raise ValueError(f"swav needs >= 2 crops and 1..n_crops codes, got {len(scores)} crops, {len(codes)} codes")
    with _float32_region(scores[0]):
        log_probs = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
        total = log_probs[0].new_zeros(())
        for i, q in enumerate(codes):
            q = q.detach().float()
            others = [-(q * lp).sum(dim=1).mean() for v, lp in enumerate(log_probs) if v != i]
            total = total + sum(others) / len(others)
        return total / len(codes)


def swav(
    scores_a: torch.Tensor,
    scores_b: torch.Tensor,
    q_a: torch.Tensor,
    q_b: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """SwAV's swapped prediction for two crops (Caron et al. 2020, eq. 1-2).

    scores_a, scores_b: [B, K] scores of the two crops against the prototypes (with gradient);
    q_a, q_b: [B, K] their codes from `sinkhorn` (targets, detached here). The loss is
    0.5 * (CE(q_b, softmax(scores_a / T)) + CE(q_a, softmax(scores_b / T))), each cross-entropy summed
    over prototypes and averaged over the batch. For more crops use `swav_multicrop`.
    """
    for t in (scores_b, q_a, q_b):
        if t.shape != scores_a.shape or t.ndim != 2:
            raise ValueError(f"swav expects four [B, K] tensors of equal shape, got {tuple(t.shape)}")
    return swav_multicrop([scores_a, scores_b], [q_a, q_b], temperature)


def dino(
    student_out: Sequence[torch.Tensor],
    teacher_out: Sequence[torch.Tensor],
    center: torch.Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> torch.Tensor:
    """DINO's self-distillation cross-entropy (Caron et al. 2021, eq. 2-3 and Algorithm 1).

    student_out: one [B, K] logit tensor per crop, the global crops first; teacher_out: one [B, K]
    logit tensor per global crop, in the same order; center: [K] or [1, K], the running mean of the
    teacher's logits (its update is the caller's). Teacher probabilities softmax((t - center) /
    teacher_temperature) are targets and detached here, as in the official code; the student's are
    log_softmax(s / student_temperature). The loss averages -sum_k P_t log P_s over the batch and over every
    (teacher crop i, student crop v) pair with v != i, i.e. n_teacher * n_student - n_teacher terms.
    """
    if not teacher_out or len(teacher_out) > len(student_out):
        raise ValueError(f"dino needs 1..n_student teacher crops, got {len(teacher_out)} and {len(student_out)}")
    shape = student_out[0].shape
    if len(shape) != 2 or any(t.shape != shape for t in [*student_out, *teacher_out]):
        raise ValueError("dino expects [B, K] logits of one shape for every crop")
    with _float32_region(student_out[0]):
        center = center.detach().float().reshape(1, -1)
        targets = [F.softmax((t.detach().float() - center) / teacher_temperature, dim=1) for t in teacher_out]
        log_probs = [F.log_softmax(s.float() / student_temperature, dim=1) for s in student_out]
        total, terms = log_probs[0].new_zeros(()), 0
        for i, p_t in enumerate(targets):
            for v, log_p_s in enumerate(log_probs):
                if v != i:
                    total = total + (-(p_t * log_p_s).sum(dim=1)).mean()
                    terms += 1
        if terms == 0:
            raise ValueError("dino needs a student crop other than the teacher's (got one crop each)")
        return total / terms


def ibot_patch(
    student_patches: torch.Tensor,
    teacher_patches: torch.Tensor,
    mask: torch.Tensor,
    center: torch.Tensor | None = None,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.07,
    centering: str = "softmax",
    sinkhorn_iters: int = 3,
    world_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """iBOT's masked-patch self-distillation (Zhou et al. 2022) as DINOv2 computes it (Oquab et al. 2023, sec. 4;
    official `iBOTPatchLoss.forward_masked`): for every patch masked in the student's input, the cross-entropy
    between the teacher's distribution over prototypes for that patch, which it saw unmasked, and the student's.

    mask: [n, L] or [n, h, w], True where the student's patch was masked. student_patches, teacher_patches:
    head logits, either [n, L, K] for every patch (the masked ones are selected here) or [M, K] for the masked
    patches only, in mask order (`x[mask.flatten(1)]`, M = mask.sum()), which spares running a K-way head on
    the visible patches, as the official code does. The teacher's targets are detached here:
      centering="softmax":  softmax((t - center) / teacher_temperature), `center` [K] or [1, K] being the
                            running mean of the teacher's masked-patch logits (its update is the caller's);
      centering="sinkhorn": `sinkhorn(t, teacher_temperature, sinkhorn_iters, world_sum)`, DINOv2's
                            Sinkhorn-Knopp centering over the masked patches of the global batch (pass
                            world_sum under data parallelism; no centre).
    Each masked patch's -sum_k P_t log softmax(s / student_temperature) weighs 1 / (its image's number of
    masked patches) and the sum is divided by n: the mean over images of each image's mean over its masked
    patches, so that an image with a few masked patches counts as much as one with many. An image without
    masked patches counts as 0 in that mean, as in the official code, whose loss weight goes with it (DINOv2
    masks half of the images). The default temperatures are DINOv2's (its teacher's after a warmup from 0.04).
    """
    mask = mask.flatten(1).bool() if mask.ndim >= 2 else mask
    if mask.ndim != 2 or student_patches.shape != teacher_patches.shape or student_patches.ndim not in (2, 3):
        raise ValueError(
            f"ibot_patch expects logits [n, L, K] or [M, K] of one shape and a mask [n, L] or [n, h, w], got "
            f"{tuple(student_patches.shape)}, {tuple(teacher_patches.shape)}, {tuple(mask.shape)}"
        )
    if student_patches.ndim == 3:
        if student_patches.shape[:2] != mask.shape:
            raise ValueError(
                f"ibot_patch: logits {tuple(student_patches.shape)} do not match the mask's [n, L] {tuple(mask.shape)}"
            )
        student_patches, teacher_patches = student_patches[mask], teacher_patches[mask]
    if centering == "softmax" and center is None:
        raise ValueError("ibot_patch with centering='softmax' needs the running `center` [K]")
    if centering not in ("softmax", "sinkhorn"):
        raise ValueError(f"unknown centering {centering!r}; known: 'softmax', 'sinkhorn'")
    n = mask.shape[0]
    with _float32_region(student_patches):
        per_image = mask.sum(dim=1).clamp(min=1).float()  # [n]
        weights = (1.0 / per_image)[:, None].expand_as(mask)[mask]  # [M], each masked patch's 1 / its image's count
        if weights.shape[0] != student_patches.shape[0]:
            raise ValueError(f"ibot_patch: {student_patches.shape[0]} logits for {weights.shape[0]} masked patches")
        teacher = teacher_patches.detach().float()
        if centering == "sinkhorn":
            targets = sinkhorn(teacher, eps=teacher_temperature, iters=sinkhorn_iters, world_sum=world_sum)
        else:
            center = center.detach().float().reshape(1, -1)
            if center.shape[1] != teacher.shape[1]:
                raise ValueError(f"ibot_patch: center of {center.shape[1]} entries for {teacher.shape[1]} prototypes")
            targets = F.softmax((teacher - center) / teacher_temperature, dim=1)
        log_probs = F.log_softmax(student_patches.float() / student_temperature, dim=1)
        cross_entropy = -(targets * log_probs).sum(dim=1)  # [M]
        return (cross_entropy * weights).sum() / n


def koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The KoLeo regulariser (Sablayrolles et al. 2019; DINOv2, Oquab et al. 2023, sec. 4): -mean_i log(d_i),
    d_i the distance from the L2-normalised x_i to its nearest neighbour among the other rows of x. It is the
    Kozachenko-Leonenko estimator of the differential entropy of the features on the sphere, up to constants
    and sign, so minimising it spreads a batch's features uniformly; DINOv2 applies it to the student's class
    tokens of each global crop (backbone output, before the head).

    x: [n, d], n >= 2. eps as in the official code: rows are normalised with eps, d_i is torch's
    pairwise_distance (||a - b + eps||) and the log is of d_i + eps, so coinciding points give a large finite
    loss. Neighbours are found without gradient (an argmax of the cosines, the diagonal excluded); the
    distances carry it. The neighbour is searched within x only: under data parallelism the official code
    does not gather, each process regularises its own batch.
    """
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo expects [n, d] features with n >= 2 (a nearest neighbour), got {tuple(x.shape)}")
    with _float32_region(x):
        x = F.normalize(x.float(), dim=1, eps=eps)
        with torch.no_grad():
            cosines = x @ x.T
            cosines.fill_diagonal_(float("-inf"))  # never one's own neighbour, even against an antipode
            nearest = cosines.argmax(dim=1)
        distances = F.pairwise_distance(x, x[nearest], eps=eps)
        return -torch.log(distances + eps).mean()


def beta_vae_elbo(
    x: torch.Tensor,
    x_rec: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float = 1.0,
    likelihood: str = "gaussian",
    capacity: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative ELBO of a beta-VAE (Higgins et al. 2017, eq. 4), or with a capacity target (Burgess et
    al. 2018, eq. 8): returns (loss, {"recon": ..., "kl": ...}).

    x: [B, ...] data; x_rec: decoder output of x's shape, the mean of a Gaussian (likelihood="gaussian")
    or the logits of Bernoullis (likelihood="bernoulli", x in [0, 1]); mu, logvar: [B, z] parameters of
    the posterior N(mu, exp(logvar)).
      recon: -log p(x | z) per sample, summed over all non-batch entries and averaged over the batch:
             Gaussian with unit variance up to its constant, 0.5 * sum (x - x_rec)^2; Bernoulli,
             binary cross-entropy with logits summed.
      kl:    KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum(1 + logvar - mu^2 - exp(logvar)) over the
             latent dims, averaged over the batch.
    loss = recon + beta * kl, or recon + beta * |kl - capacity| when a capacity C is given (Burgess et
    al. call beta gamma there and increase C during training). The terms are returned with their graph.
    """
    if x.shape != x_rec.shape or x.ndim < 2:
        raise ValueError(
            f"beta_vae_elbo expects x and x_rec of one [B, ...] shape, got {tuple(x.shape)}, {tuple(x_rec.shape)}"
        )
    if mu.shape != logvar.shape or mu.ndim != 2 or mu.shape[0] != x.shape[0]:
        raise ValueError(
            f"beta_vae_elbo expects mu, logvar of shape [B, z], got {tuple(mu.shape)}, {tuple(logvar.shape)}"
        )
    with _float32_region(x_rec):
        x, x_rec, mu, logvar = x.float(), x_rec.float(), mu.float(), logvar.float()
        if likelihood == "gaussian":
            per_entry = 0.5 * (x - x_rec).pow(2)
        elif likelihood == "bernoulli":
            per_entry = F.binary_cross_entropy_with_logits(x_rec, x, reduction="none")
        else:
            raise ValueError(f"unknown likelihood {likelihood!r}; known: 'gaussian', 'bernoulli'")
        recon = per_entry.flatten(1).sum(dim=1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        regulariser = kl if capacity is None else (kl - capacity).abs()
        return recon + beta * regulariser, {"recon": recon, "kl": kl}
