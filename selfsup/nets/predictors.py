"""Predictors of BYOL / SimSiam: the 2-layer MLP, a trained linear layer, and the analytic ones.

DirectPred (Tian, Chen & Ganguli 2021, section 5) sets a linear predictor from the EMA of the
correlation F = E[f f^T] of its inputs: with F = U diag(s) U^T, W = U diag(p) U^T and
p_j = sqrt(s_j / max_k s_k) + eps. DirectCopy (Wang et al. 2021) skips the eigendecomposition:
W = F / ||F||_2 + eps I. Both are symmetric with F's eigenvectors, the fixed point the analysis of
non-contrastive learning predicts for a trained linear predictor; `symmetric` and `symmetry_reg` bring
the trained one there too. Every linear predictor tracks F, for the dynamics analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn as nn

from selfsup.dist import sum_over_processes, world_info
from selfsup.errors import UserError
from selfsup.nets.heads import mlp
from selfsup.settings import Flag, Momentum, NonNegative, Positive, PositiveInt, check_section, declaration, one_of

PREDICTORS = ("mlp", "linear", "directpred", "directcopy")


def directpred_weight(corr: torch.Tensor, eps: float) -> torch.Tensor:
    """DirectPred's predictor from a correlation matrix: U diag(sqrt(s / max s) + eps) U^T (negative
    eigenvalues from rounding are clipped to 0)."""
    s, u = torch.linalg.eigh(corr.double())
    s = s.clamp_min(0)
    p = (s / s.max().clamp_min(torch.finfo(s.dtype).tiny)).sqrt() + eps
    return ((u * p) @ u.T).to(corr.dtype)


def directcopy_weight(corr: torch.Tensor, eps: float) -> torch.Tensor:
    """DirectCopy's predictor: F normalised to unit spectral norm, plus eps I."""
    norm = torch.linalg.matrix_norm(corr.double(), ord=2).clamp_min(torch.finfo(torch.float64).tiny)
    eye = torch.eye(corr.shape[0], dtype=torch.float64, device=corr.device)
    return (corr.double() / norm + eps * eye).to(corr.dtype)


class LinearPredictor(nn.Module):
    """p = W f without bias, after `layers - 1` trained Linear-BN-ReLU layers. `kind`: "linear" trains W
    (optionally used as (W + W^T) / 2, and with a penalty symmetry_reg * ||W - W^T||_F^2); "directpred" /
    "directcopy" set W from F every `freq` optimizer steps. F <- rho * F + (1 - rho) * mean(f f^T) at every
    training forward, averaged over processes so that every process sets the same W; rho = 0 uses the
    current batch alone."""

    def __init__(
        self,
        dim: int,
        kind: str = "linear",
        rho: float = 0.3,
        eps: float = 0.1,
        freq: int = 1,
        symmetric: bool = False,
        symmetry_reg: float = 0.0,
        layers: int = 1,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise UserError(f"method.predictor.layers must be >= 1, got {layers}")
        # layers > 1: trained Linear-BN-ReLU layers before W (DirectPred's 3-layer variant sets only the last
        # layer); F is then the correlation of W's input, the trunk's output.
        self.trunk = nn.Sequential(
            *(nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True)) for _ in range(layers - 1))
        )
        if kind not in ("linear", "directpred", "directcopy"):
            raise ValueError(f"unknown linear predictor {kind!r}")
        if not 0 <= rho < 1 or freq < 1:
            raise UserError(f"method.predictor.rho must be in [0, 1) and freq >= 1, got rho={rho}, freq={freq}")
        self.kind, self.rho, self.eps, self.freq = kind, rho, eps, freq
        self.symmetric, self.symmetry_reg = symmetric, symmetry_reg
        self.register_buffer("corr", torch.zeros(dim, dim))
        self.register_buffer("corr_updates", torch.zeros((), dtype=torch.long))
        # Whether this process has updated F: a host-side copy of `corr_updates > 0`, so that the step
        # never reads the device to decide whether W can be set (after a resume, W is restored with F).
        self.corr_seen = False
        if kind == "linear":
            self.weight = nn.Parameter(nn.Linear(dim, dim, bias=False).weight.detach().clone())
        else:
            # Identity until F has been seen: the first steps predict the projection itself.
            self.register_buffer("weight", torch.eye(dim))

    def matrix(self) -> torch.Tensor:
        """The W applied in `forward`."""
        return (self.weight + self.weight.T) / 2 if self.symmetric else self.weight

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        f = self.trunk(f)
        if self.training:
            self.update_corr(f.detach())
        return f @ self.matrix().to(f.dtype).T

    @torch.no_grad()
    def update_corr(self, f: torch.Tensor) -> None:
        f = f.float()
        batch_corr = sum_over_processes(f.T @ f / f.shape[0]) / world_info()[1]
        # The first batch initialises F; chosen on the device, without a host sync in the step.
        rho = torch.where(self.corr_updates > 0, self.rho, 0.0)
        self.corr.mul_(rho).add_(batch_corr * (1 - rho))
        self.corr_updates.add_(1)
        self.corr_seen = True

    def regularization(self) -> torch.Tensor | None:
        """symmetry_reg * ||W - W^T||_F^2 for a trained W; None when there is nothing to add."""
        if self.kind != "linear" or self.symmetry_reg == 0:
            return None
        return self.symmetry_reg * (self.weight - self.weight.T).pow(2).sum()

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if self.kind == "linear" or step % self.freq != 0 or not self.corr_seen:
            return
        make = directpred_weight if self.kind == "directpred" else directcopy_weight
        self.weight.copy_(make(self.corr, self.eps))


class MLPPredictor(nn.Sequential):
    """BYOL's and SimSiam's 2-layer predictor (Linear-BN-ReLU-Linear), with the predictor interface."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__(*mlp(dim, hidden_dim, dim, num_layers=2))

    def regularization(self) -> None:
        return None

    def after_optimizer_step(self, step: int) -> None:
        """Nothing: trained by the optimizer alone."""


@dataclass(frozen=True)
class PredictorSettings:
    """The predictor of BYOL, SimSiam, DirectPred and DirectCopy (`method.predictor.*`): its kind, the MLP's
    width, the analytic predictors' F estimate (EMA rate `rho`, `eps`, update every `freq` steps), the trained
    linear one's symmetry, the trained layers before W, and its own lr multiple and weight decay."""

    type: Annotated[str, one_of(*PREDICTORS)] = "mlp"
    hidden_dim: PositiveInt = 4096
    rho: Momentum = 0.3
    eps: Positive = 0.1
    freq: PositiveInt = 1
    symmetric: Flag = False
    symmetry_reg: NonNegative = 0.0
    layers: PositiveInt = 1
    lr_scale: Positive = 1.0
    weight_decay: NonNegative | None = None

    def __post_init__(self) -> None:
        check_section("method.predictor", dataclasses.asdict(self), declaration(type(self)))

    @classmethod
    def of(cls, value: PredictorSettings | Mapping[str, Any] | None, **defaults: Any) -> PredictorSettings:
        """Settings from a method's `predictor=` argument: an instance, a mapping of fields over `defaults`
        (a method's own, e.g. SimSiam's narrower MLP), or None for `defaults` alone."""
        if isinstance(value, cls):
            return value
        values = {**defaults, **dict(value or {})}
        check_section("method.predictor", values, declaration(cls))  # an unknown key in one line, not a TypeError
        return cls(**values)

    def optimizer_options(self) -> dict[str, float]:
        """The predictor's own optimizer options (`param_groups`) where set: lr_scale (a multiple of the
        scheduled lr) and weight_decay (the symmetric-predictor baseline of Tian et al. 2021 trains its
        predictor at its own lr and weight decay)."""
        options = {}
        if self.lr_scale != 1.0:
            options["lr_scale"] = float(self.lr_scale)
        if self.weight_decay is not None:
            options["weight_decay"] = float(self.weight_decay)
        return options


def build_predictor(settings: PredictorSettings, dim: int) -> MLPPredictor | LinearPredictor:
    """The predictor `settings.type` names, on `dim`-dimensional projections."""
    if settings.type == "mlp":
        return MLPPredictor(dim, settings.hidden_dim)
    return LinearPredictor(
        dim,
        settings.type,
        rho=float(settings.rho),
        eps=float(settings.eps),
        freq=int(settings.freq),
        symmetric=bool(settings.symmetric),
        symmetry_reg=float(settings.symmetry_reg),
        layers=int(settings.layers),
    )
