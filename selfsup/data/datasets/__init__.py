"""The dataset readers and generators, one module per format family; importing this package registers each
in the dataset registry (`selfsup.data.sources`)."""

from selfsup.data.datasets import cifar, fashion_mnist, folders, shapes, stl10, svhn, synthetic  # noqa: F401
