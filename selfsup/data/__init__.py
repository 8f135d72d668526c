"""Datasets, views and loaders. Importing the package registers every dataset, including those defined
outside `sources` (`shapes`)."""

from selfsup.data import shapes as _shapes  # noqa: F401  (registers "shapes")
