"""selfsup: self-supervised visual representation learning, from pretraining to reports.

As a library: every method, the batched augmentations, the losses and the backbones are importable from
here (`from selfsup import SimCLR, BatchCropFlip, BatchAugment, Schedule`); they load on first use, so
`import selfsup` stays cheap for the command line. README.md, "Use as a library", shows a whole loop.
"""

from __future__ import annotations

import importlib
from typing import Any

from selfsup.version import __version__

# public name -> module that defines it
_EXPORTS = {
    "Method": "selfsup.methods.base",
    "Schedule": "selfsup.methods.base",
    "SimCLR": "selfsup.methods.simclr",
    "MoCo": "selfsup.methods.moco",
    "MoCoV3": "selfsup.methods.moco_v3",
    "MAE": "selfsup.methods.mae",
    "BYOL": "selfsup.methods.byol",
    "SimSiam": "selfsup.methods.simsiam",
    "SwAV": "selfsup.methods.swav",
    "VICReg": "selfsup.methods.vicreg",
    "BarlowTwins": "selfsup.methods.barlow",
    "DINO": "selfsup.methods.dino",
    "BetaVAE": "selfsup.methods.beta_vae",
    "PredictorSettings": "selfsup.nets.predictors",
    "build_backbone": "selfsup.nets.backbones",
    "BatchCropFlip": "selfsup.data.batched_crops",
    "BatchAugment": "selfsup.data.batched_colour",
    "CropFlip": "selfsup.data.views",
    "LARS": "selfsup.optim",
    "warmup_cosine": "selfsup.optim",
}
_MODULES = ("losses",)

__all__ = ["__version__", *_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"selfsup.{name}")
    raise AttributeError(f"module 'selfsup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
