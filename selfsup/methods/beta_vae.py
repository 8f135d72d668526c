"""beta-VAE (Higgins et al. 2017; capacity annealing of Burgess et al. 2018) with the backbone as encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn as nn

from selfsup.losses import beta_vae_elbo
from selfsup.methods.base import METHODS, Method, Schedule
from selfsup.nets.heads import ConvDecoder
from selfsup.settings import NonNegative, PositiveInt, one_of

LIKELIHOODS = ("gaussian", "bernoulli")


class PosteriorMean(nn.Module):
    """x -> mu(x): the VAE's representation, evaluated like any backbone."""

    def __init__(self, backbone: nn.Module, mu: nn.Linear) -> None:
        super().__init__()
        self.backbone, self.mu = backbone, mu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mu(self.backbone(x))


@METHODS.register("beta_vae")
class BetaVAE(Method):
    """Encoder: the backbone's pooled features -> (mu, log variance) of a diagonal Gaussian posterior;
    decoder: `ConvDecoder` back to the crop. The likelihood is Gaussian (unit variance) or Bernoulli on
    the crop's pixels in [0, 1], whatever the views' normalisation: the encoder sees standardised views
    like every other method's backbone (and as evaluation feeds it), the decoder's target is those views
    with `pixel_stats` = (mean, std) undone. With `capacity` set, the KL target grows linearly from 0 to
    it over `capacity_epochs` (Burgess et al.); `beta` then weighs |KL - C|."""

    reconstructs_pixels = True

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int | None = None,
        *,
        latent_dim: PositiveInt = 256,
        decoder_channels: PositiveInt = 512,
        image_size: PositiveInt = 224,
        beta: NonNegative = 4.0,
        likelihood: Annotated[str, one_of(*LIKELIHOODS)] = "gaussian",
        capacity: NonNegative | None = None,
        capacity_epochs: NonNegative = 50.0,
        pixel_stats: tuple[Sequence[float], Sequence[float]] = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ) -> None:
        super().__init__(backbone, feature_dim)
        # Not in the state dict: they follow from the run's config, and checkpoints stay loadable.
        for name, values in zip(("pixel_mean", "pixel_std"), pixel_stats, strict=True):
            self.register_buffer(name, torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.mu = nn.Linear(self.feature_dim, latent_dim)
        self.logvar = nn.Linear(self.feature_dim, latent_dim)
        self.decoder = ConvDecoder(latent_dim, int(image_size), decoder_channels)
        self.image_size = int(image_size)
        self.beta = float(beta)
        self.likelihood = str(likelihood)
        self.capacity = None if capacity is None else float(capacity)
        self.capacity_epochs = float(capacity_epochs)

    def capacity_at(self, schedule: Schedule | None) -> float | None:
        """The KL target at `schedule`'s step: a linear ramp to `capacity` over `capacity_epochs`."""
        if self.capacity is None or self.capacity_epochs == 0:
            return self.capacity
        at = self.scheduled(schedule, f"the capacity ramp over capacity_epochs={self.capacity_epochs:g}")
        ramp = at.steps(self.capacity_epochs)
        return self.capacity * min(1.0, at.step / ramp) if ramp > 0 else self.capacity

    def forward(self, views: list[torch.Tensor], schedule: Schedule | None = None) -> dict[str, torch.Tensor]:
        x = torch.cat(views)  # every view is a sample of the data distribution
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(f"the decoder was built for {self.image_size}-px crops, got {tuple(x.shape[-2:])}")
        h = self.backbone(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        pixels = x.float() * self.pixel_std + self.pixel_mean
        capacity = self.capacity_at(schedule)
        loss, terms = beta_vae_elbo(pixels, self.decoder(z), mu, logvar, self.beta, self.likelihood, capacity)
        return {"loss": loss, "recon": terms["recon"].detach(), "kl": terms["kl"].detach()}

    def representation(self) -> nn.Module:
        return PosteriorMean(self.backbone, self.mu)
