"""Training-dynamics measures: collapse monitors for every method and, for methods with a predictor, the
eigenspace alignment between the predictor Wp and the feature correlation F (DirectPred).

A linear predictor is its matrix W and keeps its own F (the EMA of the projections' correlation). A non-linear
(MLP) predictor is linearised: Wp is its Jacobian at the batch mean of the projections, in eval mode
(BatchNorm at its running statistics), the linear map it applies to small moves around the features' centre;
F is the uncentred correlation E[z z^T] of that batch's projections. Both are then measured alike.

Tian, Chen & Ganguli 2021 ("Understanding self-supervised learning dynamics without contrastive pairs")
show that BYOL/SimSiam's linear predictor Wp becomes symmetric and shares F's eigenvectors as training
proceeds; `asymmetry`, `commutator` and `eigenspace_alignment` measure exactly that. The collapse monitors
are the per-dimension std of L2-normalised embeddings (SimSiam, Chen & He 2021: 0 when collapsed,
about 1/sqrt(d) when spread), the effective rank (Roy & Vetterli 2007; RankMe, Garrido et al. 2023) and
alignment / uniformity on the hypersphere (Wang & Isola 2020).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfsup.methods.base import Method
from selfsup.nets.predictors import LinearPredictor, MLPPredictor


def embedding_std(z: Tensor) -> float:
    """Mean over dimensions of the std of the L2-normalised embeddings [N, D]: 0 for a collapsed batch."""
    return F.normalize(z.double(), dim=1).std(dim=0).mean().item()


def effective_rank(z: Tensor, eps: float = 1e-12) -> float:
    """exp(entropy) of the singular-value distribution p_i = s_i / sum(s) of z [N, D]: 1 when every row is
    the same vector (complete collapse), min(N, D) when all singular values are equal."""
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum().clamp_min(eps)
    return torch.exp(-(p * torch.log(p.clamp_min(eps))).sum()).item()


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(x+)||^alpha over positive pairs of L2-normalised embeddings (lower: more invariant)."""
    a, b = F.normalize(z1.double(), dim=1), F.normalize(z2.double(), dim=1)
    return (a - b).norm(dim=1).pow(alpha).mean().item()


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """log E exp(-t ||f(x) - f(y)||^2) over distinct pairs of L2-normalised embeddings (lower: more uniform;
    0 when collapsed)."""
    d2 = torch.pdist(F.normalize(z.double(), dim=1)).pow(2)
    return torch.log(torch.exp(-t * d2).mean()).item()


def asymmetry(w: Tensor) -> float:
    """||W - W^T||_F / ||W||_F: 0 for a symmetric predictor."""
    w = w.double()
    return ((w - w.T).norm() / w.norm()).item()


def commutator(w: Tensor, corr: Tensor) -> float:
    """||W F - F W||_F / (||W||_F ||F||_F): 0 when W and F share their eigenvectors (and W is symmetric)."""
    w, corr = w.double(), corr.double()
    return ((w @ corr - corr @ w).norm() / (w.norm() * corr.norm())).item()


def eigenvector_cosines(w: Tensor, corr: Tensor) -> tuple[Tensor, Tensor]:
    """For each eigenvector u_j of F (eigenvalues descending): |cos(W u_j, u_j)|, which is 1 when u_j is also
    an eigenvector of W. Independent of how W's eigenvalues are ordered or degenerate. Returns (cosines,
    F's eigenvalues)."""
    values, vectors = torch.linalg.eigh(corr.double())
    values, vectors = values.flip(0), vectors.flip(1)
    mapped = w.double() @ vectors
    cosines = (mapped * vectors).sum(0).abs() / mapped.norm(dim=0).clamp_min(1e-12)
    return cosines, values


def eigenspace_alignment(w: Tensor, corr: Tensor) -> float:
    """The eigenvector cosines weighted by F's eigenvalues, so that directions the features actually occupy
    count and the near-empty ones (noise) do not: 1 when W maps every eigenvector of F onto itself."""
    cosines, values = eigenvector_cosines(w, corr)
    weights = values.clamp_min(0)
    return (cosines * weights).sum().div(weights.sum().clamp_min(1e-12)).item()


def predictor_jacobian(predictor: nn.Module, z: Tensor) -> Tensor:
    """The Jacobian [D, D] of a predictor at the mean of its inputs z [N, D] (evaluated as the module is: call it
    in eval mode), through torch.func, which differentiates even under an outer no_grad."""
    centre = z.mean(0, keepdim=True).to(next(predictor.parameters()).dtype)
    jacobian = torch.func.jacrev(lambda x: predictor(x)[0])(centre)  # [D_out, 1, D_in]
    return jacobian.reshape(jacobian.shape[0], -1).detach()


def predictor_record(w: Tensor, corr: Tensor) -> dict[str, Any]:
    """Wp and F: the scalars above, both spectra (Wp: its symmetric part's eigenvalues, real by construction;
    F: symmetric PSD), descending, and the cosine of each of F's eigenvectors with its image under Wp."""
    w, corr = w.detach(), corr.detach()
    cosines, _ = eigenvector_cosines(w, corr)
    return {
        "dynamics/predictor_asymmetry": asymmetry(w),
        "dynamics/commutator": commutator(w, corr),
        "dynamics/eigenspace_alignment": eigenspace_alignment(w, corr),
        "dynamics/predictor_eigenvalues": torch.linalg.eigvalsh(((w + w.T) / 2).double()).flip(0).tolist(),
        "dynamics/correlation_eigenvalues": torch.linalg.eigvalsh(corr.double()).flip(0).tolist(),
        "dynamics/eigenvector_cosines": cosines.tolist(),
    }


@torch.no_grad()
def dynamics_record(method: Method, views: list[Tensor]) -> dict[str, Any]:
    """Collapse monitors of the evaluated representation on the first two augmented views of a batch
    (alignment needs two; a one-view method such as the beta-VAE gets the others), computed in eval mode so
    that BatchNorm statistics are untouched; plus the predictor record of a method with a predictor (a linear
    one as it is, an MLP linearised at the batch, see the module's docstring)."""
    was_training = method.training
    method.eval()
    predictor = getattr(method, "predictor", None)
    try:
        representation = method.representation()
        embeddings = [representation(v).float() for v in views[:2]]
        if isinstance(predictor, LinearPredictor):
            predictor_view = (predictor.matrix(), predictor.corr)
        elif isinstance(predictor, MLPPredictor):
            projections = torch.cat([method.projector(e) for e in embeddings]).float()
            predictor_view = (
                predictor_jacobian(predictor, projections),
                projections.T @ projections / len(projections),
            )
        else:
            predictor_view = None
    finally:
        method.train(was_training)
    z = torch.cat(embeddings)
    record: dict[str, Any] = {
        "dynamics/embedding_std": embedding_std(z),
        "dynamics/effective_rank": effective_rank(z),
        "dynamics/uniformity": uniformity(z),
    }
    if len(embeddings) == 2:
        record["dynamics/alignment"] = alignment(*embeddings)
    if predictor_view is not None:
        record.update(predictor_record(*predictor_view))
    return record
