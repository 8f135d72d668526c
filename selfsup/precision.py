"""Pick the device and the numeric precision: bf16 autocast where the hardware computes bf16 natively."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric

from selfsup.errors import UserError

FABRIC_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def resolve_device(setting: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; asking for cuda without one is a user error."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    return setting


def make_fabric(**kwargs: Any) -> Fabric:
    """Fabric without its INFO line "Using bfloat16 Automatic Mixed Precision": selfsup's start line names the
    precision already, and a run refused on bad input must print that one error line only."""
    logging.getLogger("lightning_fabric").setLevel(logging.WARNING)
    return Fabric(**kwargs)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: CPUs where bf16 matmuls/convolutions run faster than fp32 (oneDNN kernels)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is not None for probe in probes):
        return any(probe() for probe in probes if probe is not None)
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(setting: str, device_type: str) -> str:
    """Map trainer.precision to a lightning-fabric precision string."""
    if setting == "auto":
        if device_type == "cuda":
            native = torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability()[0] >= 8
        else:
            native = cpu_has_native_bf16()
        return "bf16-mixed" if native else "32-true"
    if setting == "16" and device_type == "cpu":
        raise UserError("trainer.precision=16 needs a GPU; on CPU use trainer.precision=bf16 or 32")
    return FABRIC_PRECISION[setting]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a lightning-fabric precision string: bf16 or fp16 for the mixed ones, else None."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)


# Pixels per view batch (images x crop side^2) from which channels_last convolutions are faster on CPUs.
# Measured with `selfsup bench` (SimCLR ResNet-18, AMD EPYC AVX2, 2 threads): 32 px at batch 128 and 256,
# channels_last 10.6 / 10.5 images/s against fp32 8.6 / 8.7; 16 px at batch 16, 14.8 against 22.6.
CPU_CHANNELS_LAST_MIN_PIXELS = 64 * 32 * 32


def resolve_channels_last(setting: str | bool, precision: str, device_type: str, batch_pixels: int) -> bool:
    """Map trainer.channels_last (auto, or a bool as the config parses true/false) to a bool. `auto`: on with
    bf16 autocast, and on CPUs for view batches of at least CPU_CHANNELS_LAST_MIN_PIXELS (`batch_pixels` =
    per-process batch x crop_size^2), where oneDNN's channels-last kernels win."""
    if setting == "auto":
        return precision == "bf16-mixed" or (device_type == "cpu" and batch_pixels >= CPU_CHANNELS_LAST_MIN_PIXELS)
    return str(setting).lower() == "true"


def tune_device(device_type: str) -> None:
    """On GPUs, let cuDNN time its convolution algorithms once per input shape and keep the fastest: a run
    meets only a few shapes (one per crop size), so the one-off search pays back within the first steps."""
    if device_type == "cuda":
        torch.backends.cudnn.benchmark = True
