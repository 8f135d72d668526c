"""Class names of the shipped datasets, kept as data: selfsup/data/classes/<name>.txt, one name per line in
label order (the ImageNet subsets in their source files' order; the folder reader labels them in sorted order).

Why fixed lists: results on "ImageNet-100" are only comparable when every paper trains on the same classes.
- imagenet50, imagenet100_scan and imagenet200: SCAN (Van Gansbeke et al., "SCAN: Learning to Classify Images
  without Labels", ECCV 2020), files data/imagenet_subsets/imagenet_50.txt, imagenet_100.txt and
  imagenet_200.txt of github.com/wvangansbeke/Unsupervised-Classification (commit 57dff92), wnids in file
  order; nested (50 within 100 within 200).
- imagenet100: CMC (Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020), file imagenet100.txt of
  github.com/HobbitLong/CMC (commit bc687a2), in file order; the ImageNet-100 that later SSL work reuses. It
  shares 12 classes with SCAN's 100 (`data=imagenet100_scan`): results on the two are not comparable.
Label order is the sorted wnid order (as torchvision's ImageFolder would assign), not the file order.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def class_list(name: str) -> tuple[str, ...]:
    """The class names in classes/<name>.txt (cifar10, cifar100, stl10, fashion_mnist, imagenet50|100|100_scan|200)."""
    text = resources.files("selfsup.data").joinpath("classes", f"{name}.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)
