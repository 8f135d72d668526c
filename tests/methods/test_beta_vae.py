"""beta_vae: the entry of the registry-wide tests (tests/method_specs.py)."""

from __future__ import annotations

from tests.method_specs import MethodSpec, Mutation, OptOut, Recipe

SPECS = {
    "beta_vae": MethodSpec(
        tiny=["method.latent_dim=8", "method.decoder_channels=32"],
        two_processes=OptOut("the beta-VAE's loss is a mean of per-image ELBOs: nothing couples the images of a batch"),
        learning=Recipe(
            ["method=beta_vae", "method.latent_dim=32", "method.decoder_channels=64", "method.beta=16"],
            margin=8,
            monitors=[],
        ),
        mutations=[
            Mutation(
                "beta 0 (KL term dropped)",
                "selfsup/losses.py",
                "regulariser = kl if capacity is None else (kl - capacity).abs()",
                "regulariser = 0 * kl",
            ),
            Mutation(
                "no reparameterisation noise (z = mu while training)",
                "selfsup/methods/beta_vae.py",
                "z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu",
                "z = mu",
            ),
            Mutation(
                "KL sign flipped on the variance",
                "selfsup/losses.py",
                "kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()",
                "kl = (-0.5 * (1 + logvar - mu.pow(2) + logvar.exp()).sum(dim=1)).mean()",
            ),
        ],
    ),
}
