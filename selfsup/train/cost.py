"""Compute accounting: device-seconds, images seen, peak memory and FLOPs per image of a run."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class CostRecord:
    """What a run has spent so far; saved in every checkpoint and carried into every result."""

    device_seconds: float = 0.0  # wall seconds x number of devices (processes)
    images_seen: int = 0  # source images consumed, all processes (each gives `views` crops)
    peak_memory_bytes: int = 0  # accelerator memory on GPU, resident set size on CPU
    flops_per_image: float | None = None  # forward + backward of one training step, per source image
    devices: int = 1
    device_name: str = ""
    _started: float | None = field(default=None, repr=False)

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, device: torch.device | None = None) -> None:
        """Add the seconds since start(). On a GPU the device's queue is drained first: the loop does not sync
        every step, so the host can be steps ahead of the work it launched."""
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        if self._started is not None:
            self.device_seconds += (time.perf_counter() - self._started) * self.devices
            self._started = None

    @contextmanager
    def excluded(self, device: torch.device | None = None) -> Iterator[None]:
        """Leave the enclosed work out of device_seconds: measurements that are not training (the dynamics
        analysis) would otherwise inflate the run's cost."""
        self.stop(device)
        try:
            yield
        finally:
            self.start()

    def update_memory(self, device: torch.device) -> None:
        self.peak_memory_bytes = max(self.peak_memory_bytes, peak_memory_bytes(device))

    def as_dict(self) -> dict[str, Any]:
        record = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        record["device_hours"] = self.device_seconds / 3600
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> CostRecord:
        return cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__ and not k.startswith("_")})


def reset_peak_memory(device: torch.device) -> bool:
    """Start this run's peak memory afresh, so that runs made one after another in one process (a study)
    do not report each other's peaks. On CPU this resets the process's peak resident set size, which Linux
    allows through /proc; where it cannot (returns False), the peak stays the whole process's."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM and ru_maxrss)
    except OSError:  # not Linux, or not permitted in this container
        return False
    return True


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        model = names[0] if names else model
    return f"cpu ({model}, {torch.get_num_threads()} threads)"


def count_training_flops(step: Any, views: list[torch.Tensor]) -> float:
    """FLOPs of one forward + backward of `step(views)` (a method's loss), counted by torch.utils.flop_counter.

    Counts matmuls and convolutions, which dominate; call it on a small batch (>= 2 for BatchNorm)."""
    with FlopCounterMode(display=False) as counter:
        step(views)["loss"].backward()
    return float(counter.get_total_flops())
