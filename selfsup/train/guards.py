"""What stops or protects a training run: preemption signals, non-finite steps, unwritable output.

SLURM sends the signal asked for shortly before a time limit (`--signal=USR1@90` in sbatch scripts;
submitit, behind `selfsup submit`, asks for USR2) and SIGTERM on preemption; torchrun forwards SIGTERM to
its workers; Ctrl-C sends SIGINT. The handler only records the signal; the loop finishes the
current step, saves `last.pt` and stops, so the same command resumes exactly. A second SIGINT stops at once
(KeyboardInterrupt), for a step too slow to wait for; the checkpoints already saved stay intact.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn as nn

from selfsup.errors import UserError, nearest_existing

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
TIME_LIMIT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class TrainingFault(UserError):
    """The run itself went wrong (non-finite values): reported in one line like bad input, but its run
    directory is kept, since its metrics show how it got there."""


class Preempted(Exception):
    """Raised after the checkpoint of a signalled run is saved; the CLI exits with 128 + signal number."""

    def __init__(self, signum: int, step: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name} at step {step}: saved last.pt; rerun to resume")
        self.signum = signum


class StopSignals:
    """Records SIGTERM / SIGINT / SIGUSR1 / SIGUSR2 instead of dying; a context manager that restores the old
    handlers."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def requeue_on_slurm(signum: int) -> bool:
    """On a time-limit signal inside a SLURM job, requeue it, once, from its first task (SLURM requeues
    preempted jobs itself). Returns whether a requeue was asked for."""
    job = os.environ.get("SLURM_JOB_ID")
    first_task = os.environ.get("SLURM_PROCID", "0") == "0"
    if signum not in TIME_LIMIT_SIGNALS or not job or not first_task or shutil.which("scontrol") is None:
        return False
    return subprocess.run(["scontrol", "requeue", job], check=False).returncode == 0


def check_writable(out: Path, needed_bytes: int) -> None:
    """Fail before training when checkpoints could not be written: an unwritable directory, or less free
    space than two checkpoints (the new one is written beside the old one before replacing it)."""
    existing = nearest_existing(out)
    free = shutil.disk_usage(existing).free if existing is not None and existing.is_dir() else None
    if free is not None and free < 2 * needed_bytes:
        raise UserError(
            f"{out} has {free / 2**30:.2f} GiB free, less than two checkpoints ({2 * needed_bytes / 2**30:.2f} GiB); "
            "free space or choose another output_dir="
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise UserError(f"output_dir {out} is not writable ({err.strerror}); choose another output_dir=") from None


def saved_activation_bytes(backbone: nn.Module, size: int, images: int, probe: int = 64) -> int:
    """Bytes autograd keeps for backward in one training forward of `backbone` on `images` crops of `size`
    px: measured on 2 crops of min(size, probe) px and scaled by the pixel count, as a convnet's activations
    are. A lower bound of a step's memory (heads, gradients and optimizer state come on top)."""
    side = min(size, probe)
    weights = {t.untyped_storage().data_ptr() for t in [*backbone.parameters(), *backbone.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:  # layers save their weights too; those do not grow with pixels
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    backbone.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            backbone(torch.rand(2, 3, side, side, requires_grad=True))
    except RuntimeError as err:  # e.g. a ConvNeXt's stride-4 stem and downsampling on a 16 px crop
        reason = str(err).splitlines()[0]
        fix = "raise views.crop_size (local crops: views.local_crop_size)"
        raise UserError(f"the backbone cannot encode {side} px crops ({reason}): {fix}") from None
    return int(sum(seen.values()) / 2 * images * (size / side) ** 2)


def available_memory(device: torch.device) -> int | None:
    """Free memory on `device` in bytes: the GPU's free memory, or the host's MemAvailable (Linux)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    line = next((row for row in meminfo.splitlines() if row.startswith("MemAvailable:")), None)
    return int(line.split()[1]) * 1024 if line else None


def check_step_memory(needed: int, available: int | None, what: str, device: torch.device) -> None:
    """Refuse a run whose step cannot fit before anything that large is allocated (an OOM kill of the host
    would take other jobs with it)."""
    if available is not None and needed > available:
        raise UserError(
            f"{what} needs at least {needed / 2**30:.1f} GiB of activations per step, more than the "
            f"{available / 2**30:.1f} GiB free on {device}; lower views.crop_size or trainer.batch_size "
            "(or raise trainer.accumulate, or set trainer.activation_checkpointing=true)"
        )


def state_bytes(module: nn.Module, optimizer_copies: int = 2) -> int:
    """About what a checkpoint of `module` takes: its tensors plus the optimizer's per-parameter buffers."""
    tensors = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    return tensors + optimizer_copies * params


def finite_flag(module: nn.Module) -> torch.Tensor:
    """Whether every gradient and floating-point buffer is finite, as a bool tensor on their device: one
    reduction, no host sync.

    Buffers count because forward passes update them (BatchNorm statistics, queues, F, centres): a
    non-finite forward poisons them even when its step is skipped."""
    tensors = [p.grad for p in module.parameters() if p.grad is not None]
    tensors += [b for b in module.buffers() if b.is_floating_point()]
    if not tensors:
        return torch.tensor(True)
    return torch.isfinite(torch.stack(torch._foreach_norm(tensors)).sum())


def all_finite(module: nn.Module) -> bool:
    """finite_flag read on the host (one sync): what skip and rollback decide each step on."""
    return bool(finite_flag(module))


class FirstNonfinite:
    """The first step with non-finite gradients or buffers, kept on the device. trainer.nonfinite=stop records
    every step here without a host sync (so on a GPU the host runs ahead of the device) and reads it at log
    intervals and before every save: the run stops naming the exact step and never saves what followed it."""

    def __init__(self) -> None:
        self.step: torch.Tensor | None = None

    def record(self, finite: torch.Tensor, step: int) -> None:
        if self.step is None:
            self.step = torch.full((), -1, dtype=torch.long, device=finite.device)
        self.step = torch.where(finite | (self.step >= 0), self.step, self.step.new_full((), step))

    def first(self) -> int | None:
        first = -1 if self.step is None else int(self.step)
        return None if first < 0 else first


def weights_finite(module: nn.Module) -> bool:
    """Whether every parameter is finite (one reduction, one host sync)."""
    params = [p.detach() for p in module.parameters()]
    return not params or bool(torch.isfinite(torch.stack(torch._foreach_norm(params)).sum()))


def describe_good_checkpoint(good: Path | None) -> str:
    return f"the last good checkpoint is {good}" if good is not None else "no checkpoint was written yet"


def check_weights_finite(module: nn.Module, step: int, good: Path | None) -> None:
    """Before a save: weights made non-finite by the last update are never checkpointed (the step check
    sees gradients and buffers before the update; this sees its result)."""
    if not weights_finite(module):
        raise TrainingFault(
            f"the weights became non-finite at step {step}; not saved; {describe_good_checkpoint(good)}; "
            "lower optim.base_lr, or set trainer.nonfinite=rollback"
        )
