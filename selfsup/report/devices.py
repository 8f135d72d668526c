"""Reference GPUs for a report's compute axis: `hours_ref=p40` turns each run's device-hours into P40-hours by
the ratio of the two devices' peak training rates, so that runs made on different hardware share one axis
without the user working out a scale.

The rates are datasheet peaks, dense (no sparsity), at the precision selfsup trains in on that generation by
default: fp32 on Pascal (no tensor cores), fp16 tensor cores on Volta and Turing, bf16 tensor cores from
Ampere on. A real step reaches a different fraction of peak on each GPU (a small ResNet leaves an H100 idler
than a P40), so the converted hours are a datasheet estimate; `hours_scale=` takes a measured ratio instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from selfsup.errors import UserError
from selfsup.registry import close_matches_hint


@dataclass(frozen=True)
class ReferenceGpu:
    key: str  # what hours_ref= takes
    name: str  # the axis label's: "P40-hours"
    pattern: str  # matches torch.cuda.get_device_name() of this GPU (e.g. "Tesla P40", "NVIDIA H100 PCIe")
    tflops: float  # dense datasheet peak at `precision`
    precision: str


# More specific patterns first (H100 PCIe before H100). Sources: NVIDIA's datasheets for each board.
REFERENCE_GPUS = (
    ReferenceGpu("p40", "P40", r"\bP40\b", 11.8, "fp32"),
    ReferenceGpu("1080ti", "GTX 1080 Ti", r"1080 ?Ti", 11.3, "fp32"),
    ReferenceGpu("p100", "P100", r"\bP100\b", 10.6, "fp32"),
    ReferenceGpu("v100", "V100", r"\bV100\b", 125.0, "fp16 tensor"),
    ReferenceGpu("t4", "T4", r"\bT4\b", 65.0, "fp16 tensor"),
    ReferenceGpu("a10", "A10", r"\bA10\b", 125.0, "bf16 tensor"),
    ReferenceGpu("a100", "A100", r"\bA100\b", 312.0, "bf16 tensor"),
    ReferenceGpu("l4", "L4", r"\bL4\b", 121.0, "bf16 tensor"),
    ReferenceGpu("l40s", "L40S", r"\bL40S\b", 362.0, "bf16 tensor"),
    ReferenceGpu("h100_pcie", "H100 PCIe", r"\bH100\b.*PCIe", 756.0, "bf16 tensor"),
    ReferenceGpu("h100", "H100", r"\bH100\b", 989.0, "bf16 tensor"),
    ReferenceGpu("h200", "H200", r"\bH200\b", 989.0, "bf16 tensor"),
)


def reference_gpu(key: str) -> ReferenceGpu:
    """The table's GPU for `hours_ref=KEY` (case-insensitive)."""
    for gpu in REFERENCE_GPUS:
        if gpu.key == key.lower():
            return gpu
    keys = [gpu.key for gpu in REFERENCE_GPUS]
    hint = close_matches_hint(key.lower(), keys)
    raise UserError(f"hours_ref={key} is not a reference GPU{hint} ({', '.join(keys)})")


def device_gpu(device_name: str) -> ReferenceGpu | None:
    """The table's entry for a device as a run records it (torch's device name), or None (a CPU, another GPU)."""
    return next((gpu for gpu in REFERENCE_GPUS if re.search(gpu.pattern, device_name, re.IGNORECASE)), None)
