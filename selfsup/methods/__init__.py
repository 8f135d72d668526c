"""Method implementations; importing this package registers each one in METHODS."""

from selfsup.methods import barlow, byol, moco, simclr, simsiam, vicreg  # noqa: F401
