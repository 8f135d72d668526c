"""Method implementations; importing this package registers each one in METHODS."""

from selfsup.methods import simclr  # noqa: F401
