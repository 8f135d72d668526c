"""selfsup: self-supervised visual representation learning, from pretraining to reports."""

from selfsup.version import __version__

__all__ = ["__version__"]
