"""Find the host<->device transfers of a training run by source line, with or without a GPU.

A step that reads a device value on the host (`.item()`, `bool(t)`, `nonzero`) or copies host data to the
device (`torch.tensor(...)`, `t[i] = 0.5`) makes the host wait for the GPU, which then idles while Python
queues the next kernels. On a GPU, CUDA's sync debug mode reports each such wait. On any device, the ATen
ops that cause them can be recorded as they are dispatched, which is how tests check the step on CPU.
"""

from __future__ import annotations

import collections
import traceback
from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode

# ATen ops that, on a GPU, read device memory on the host or copy host memory to the device.
HOST_TRANSFER_OPS = frozenset(
    {
        "aten::_local_scalar_dense",  # .item(), float(t), int(t), bool(t)
        "aten::lift_fresh",  # torch.tensor(data) and Python scalars written into a tensor by indexing
        "aten::lift_fresh_copy",
        "aten::nonzero",  # output size depends on the values
        "aten::masked_select",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
    }
)


def innermost_selfsup_line() -> str:
    """'path:line code' of the innermost frame inside the selfsup package on the current stack."""
    frames = [f for f in traceback.extract_stack() if "/selfsup/" in f.filename and "/benchmarks/" not in f.filename]
    frames = [f for f in frames if not f.filename.endswith("/train/host_transfers.py")]
    if not frames:
        return "(outside selfsup)"
    frame = frames[-1]
    return f"{frame.filename.split('/selfsup/', 1)[1]}:{frame.lineno} {frame.line}"


def _in_torch_optimizer() -> bool:
    """torch's optimizers read only their step counts on the host, and keep those on the CPU next to GPU
    parameters (unless capturable or fused, which never read them): no transfer on a GPU."""
    return any("/torch/optim/" in f.filename for f in traceback.extract_stack())


class HostTransferRecorder(TorchDispatchMode):
    """Counts the dispatched ops in HOST_TRANSFER_OPS by op and selfsup source line (`counts`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = func._schema.name
        if name in HOST_TRANSFER_OPS and not (name == "aten::_local_scalar_dense" and _in_torch_optimizer()):
            self.counts[f"{name}  {innermost_selfsup_line()}"] += 1
        return func(*args, **(kwargs or {}))
