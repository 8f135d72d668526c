"""selfsup: self-supervised visual representation learning, from pretraining to reports.

As a library: every method, the batched augmentations, the losses and the backbones are importable from
here (`from selfsup import SimCLR, BatchCropFlip, BatchAugment, Schedule`); they load on first use, so
`import selfsup` stays cheap for the command line. README.md, "Use as a library", shows a whole loop.
"""

from __future__ import annotations

import importlib
from typing import Any

from selfsup.version import __version__ as __version__

# public name -> module that defines it
_EXPORTS = {
    "Method": "selfsup.methods.base",
    "Schedule": "selfsup.methods.base",
    "PredictorSettings": "selfsup.nets.predictors",
    "build_backbone": "selfsup.nets.backbones",
    "BatchCropFlip": "selfsup.data.batched_crops",
    "BatchAugment": "selfsup.data.batched_colour",
    "CropFlip": "selfsup.data.views",
    "LARS": "selfsup.optim",
    "warmup_cosine": "selfsup.optim",
}
_MODULES = ("losses",)


def _method_classes() -> dict[str, type]:
    """Every registered method class by its class name (SimCLR, BYOL, ...): a new method is exported by
    registering it, with no list here to extend. Imports the methods, so it runs on first use only."""
    from selfsup.methods.base import METHODS

    return {cls.__name__: cls for cls in map(METHODS.get, METHODS.names()) if isinstance(cls, type)}


def __getattr__(name: str) -> Any:
    if name == "__all__":  # `from selfsup import *`: computed, since the method classes are registered
        return ["__version__", *_EXPORTS, *_MODULES, *_method_classes()]
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"selfsup.{name}")
    if not name.startswith("_") and name[:1].isupper() and name in _method_classes():
        return _method_classes()[name]
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__getattr__("__all__"))
