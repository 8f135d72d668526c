"""Method implementations; importing this package registers each one in METHODS."""

from selfsup.methods import barlow, beta_vae, byol, dino, mae, moco, moco_v3, simclr, simsiam, swav, vicreg  # noqa: F401
