"""Pick the device and the numeric precision: bf16 autocast where the hardware computes bf16 natively."""

from __future__ import annotations

from pathlib import Path

import torch

from selfsup.errors import UserError

FABRIC_PRECISION = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}


def resolve_device(setting: str) -> str:
    """`auto` -> cuda when a GPU is visible, else cpu; asking for cuda without one is a user error."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    return setting


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


def resolve_channels_last(setting: str | bool, precision: str, device_type: str) -> bool:
    """Map trainer.channels_last (auto, or a bool as the config parses true/false) to a bool; `auto` turns it
    on with bf16 autocast."""
    if setting == "auto":
        return precision == "bf16-mixed"
    return str(setting).lower() == "true"
