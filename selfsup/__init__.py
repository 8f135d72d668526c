"""selfsup: self-supervised visual representation learning, from pretraining to reports."""

__version__ = "0.1.0"
