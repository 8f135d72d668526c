"""The one fine-tuning trainer of the transfer tasks (fine-tuning, detection, segmentation).

Each task brings its model, its parameter groups, its batches and its loss; this trainer owns the rest once:
SGD whose groups keep their peak lr as `base_lr`, an lr that is a pure function of the epoch and step (the
multipliers of `selfsup.optim`), so a resumed training is exact, autocast at the run's precision, the
divergence check, and training in chunks of epochs that save the state after every epoch and resume from it
(`eval/transfer.py` checks that a resume has the same settings).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from selfsup.errors import UserError
from selfsup.eval.transfer import (
    TransferJob,
    load_downstream_model,
    load_training_state,
    save_downstream_model,
    save_training_state,
)

LrFactor = Callable[[int, int], float]  # (epoch, step of the whole training) -> multiplier of each group's base_lr


def sgd(
    groups: Iterable[tuple[Iterable[nn.Parameter], float]], momentum: float, weight_decay: float
) -> torch.optim.SGD:
    """SGD over (parameters, peak lr) groups; each group keeps its peak lr as `base_lr` for the schedule."""
    param_groups = [{"params": list(params), "base_lr": lr, "lr": lr} for params, lr in groups]
    return torch.optim.SGD(param_groups, lr=param_groups[0]["lr"], momentum=momentum, weight_decay=weight_decay)


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """One optimizer step on `loss`; returns it detached."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@dataclass
class Trained:
    history: list[float]  # mean training loss of every epoch trained so far, this call's and earlier calls'
    epochs_trained: int
    complete: bool  # False when chunk_epochs stopped this call before the last epoch


def fine_tune(
    job: TransferJob,
    task: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Any]],
    loss: Callable[[Any], torch.Tensor],
    lr_factor: LrFactor,
    epochs: int,
    steps_per_epoch: int,
    chunk_epochs: int | None = None,
) -> Trained:
    """Train `model` from the task's saved state (if any) for at most `chunk_epochs` more of `epochs` epochs.

    `batches(epoch)` yields that epoch's batches (seeded by the epoch, so a resumed epoch sees the same
    data); `loss(batch)` is the task's loss, computed under the run's autocast."""
    if job.model_weights is not None:  # score a kept model: no training, no state touched
        load_downstream_model(job, task, model)
        return Trained(history=[], epochs_trained=0, complete=True)
    state = load_training_state(job, task)
    start, history = 0, []
    if state is not None:
        if "history" not in state:
            raise UserError(f"{job.state_path} is from an older selfsup; delete it to start {task} training over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"], list(state["history"])
    end = epochs if chunk_epochs is None else min(epochs, start + chunk_epochs)
    dtype = job.autocast
    for epoch in range(start, end):
        model.train()
        total, count = torch.zeros((), device=job.device), 0
        desc = f"{task} {epoch + 1}/{epochs}"
        for i, batch in enumerate(tqdm(batches(epoch), desc=desc, disable=not job.progress, leave=False)):
            factor = lr_factor(epoch, epoch * steps_per_epoch + i)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            with torch.autocast(job.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                batch_loss = loss(batch)
            total += step(optimizer, batch_loss.float())
            count += 1
        mean_loss = total.item() / max(count, 1)
        if not math.isfinite(mean_loss):
            raise UserError(f"{task} training diverged (loss {mean_loss}); lower eval.{task}.lr")
        history.append(mean_loss)
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}
        save_training_state(job, task, {**state, "history": history})
    complete = max(start, end) >= epochs
    if complete:
        save_downstream_model(job, task, model)
    return Trained(history=history, epochs_trained=max(start, end), complete=complete)
