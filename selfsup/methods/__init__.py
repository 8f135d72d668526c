"""Method implementations; importing this package registers each one in METHODS."""

from selfsup.methods import barlow, beta_vae, byol, dino, moco, simclr, simsiam, swav, vicreg  # noqa: F401
