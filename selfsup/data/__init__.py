"""Datasets, views and loaders. Importing the package registers every dataset (`selfsup.data.datasets`)."""

from selfsup.data import datasets as _datasets  # noqa: F401  (registers every dataset)
