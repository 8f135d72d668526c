"""What every transfer task (fine-tuning, detection, segmentation) receives and returns.

`selfsup eval TASK` (eval/offline.py) loads the checkpoint, builds a `TransferJob` and calls the task's
`run(job) -> TaskResult`; it then adds provenance (config, checkpoint, cost, commit) and writes
`eval/<checkpoint>/<task>.json`. The tasks train through `eval/finetuning.py`, which keeps the resumable
training state in `job.state_path` through `save_training_state` / `load_training_state`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from omegaconf import DictConfig, OmegaConf

from selfsup.errors import UserError
from selfsup.nets.weights import describe_mismatch
from selfsup.precision import autocast_dtype, resolve_precision
from selfsup.runs.files import atomic_torch_save, atomic_write_bytes, load_tensors


@dataclass
class TransferJob:
    cfg: DictConfig  # the run's resolved config with the command's overrides; the task reads cfg.eval.<task>
    backbone: nn.Module  # pretrained weights loaded, classifier removed (images -> [B, D])
    feature_dim: int
    device: torch.device
    state_path: Path  # eval/<checkpoint>/<task>-state.pt: saved every epoch, removed by the caller when done
    progress: bool = True
    model_path: Path | None = None  # where a finished training keeps its model; None: not kept
    model_weights: Path | None = None  # a kept model to score instead of training one (`selfsup eval TASK model=`)

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype of the run's precision on this device (None: fp32), for training and testing."""
        return autocast_dtype(resolve_precision(str(self.cfg.trainer.precision), self.device.type))


@dataclass
class TaskResult:
    metrics: dict[str, float]  # e.g. top1/top5, map/map_50, miou
    params: dict[str, Any]  # the settings that produced the metrics (the task's config section)
    dataset: dict[str, Any]  # name, splits, sizes
    complete: bool = True  # False when a chunked training stopped early (chunk_epochs) and must be resumed
    extra: dict[str, Any] = field(default_factory=dict)  # per-class scores, training curves


# Settings that may change between the invocations of one training: its length, how it is chunked and fed,
# and the constant lr a resumed detection training switches to. Any other change would mix two trainings.
RESUMABLE_CHANGES = ("epochs", "chunk_epochs", "num_workers", "constant_lr_after", "constant_lr")


def resume_settings(job: TransferJob, task: str) -> dict[str, Any]:
    """The task's settings that one training must keep from start to end (and that a kept model records)."""
    section = OmegaConf.to_container(job.cfg.eval[task], resolve=True)
    return {k: v for k, v in section.items() if k not in RESUMABLE_CHANGES}


def load_training_state(job: TransferJob, task: str) -> dict[str, Any] | None:
    """The state `save_training_state` left after the last finished epoch, or None to start afresh.
    A state from other settings is refused, naming the first setting that differs."""
    path = job.state_path
    if not path.is_file():
        return None
    state = load_tensors(path, f"cannot resume {task} training from {{path}} ({{error}}); delete it to start over")
    saved, now = state.get("settings", {}), resume_settings(job, task)
    changed = sorted(k for k in now if saved.get(k) != now[k])
    if changed:
        key = changed[0]
        raise UserError(
            f"{path} was trained with eval.{task}.{key}={saved.get(key)!r}, not {now[key]!r}; "
            f"restore it to resume, or delete the file to start over"
        )
    return state


def save_training_state(job: TransferJob, task: str, state: dict[str, Any]) -> None:
    """Atomically save the state after an epoch, with the settings a resume must match."""
    atomic_torch_save({**state, "settings": resume_settings(job, task)}, job.state_path)


def save_downstream_model(job: TransferJob, task: str, model: nn.Module) -> None:
    """A finished training's model as safetensors at job.model_path, with the task and its settings in the
    metadata; written atomically."""
    from safetensors.torch import save as safetensors_bytes

    if job.model_path is None:
        return
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"selfsup_task": task, "settings": json.dumps(resume_settings(job, task))}
    atomic_write_bytes(job.model_path, safetensors_bytes(weights, metadata))


def recorded_settings(metadata: dict[str, str]) -> dict[str, Any]:
    """The settings a kept model's metadata records; {} when they are unreadable (a hand-edited file), so that a
    mismatch is then named by its tensors instead."""
    try:
        saved = json.loads(metadata.get("settings", "{}"))
    except json.JSONDecodeError:
        return {}
    return saved if isinstance(saved, dict) else {}


def load_downstream_model(job: TransferJob, task: str, model: nn.Module) -> None:
    """Load the kept model job.model_weights into `model` (the one these settings build), every key and shape
    matching; a file of another task or architecture is refused in one line."""
    from safetensors import SafetensorError, safe_open

    path = job.model_weights
    assert path is not None
    if not path.is_file():
        raise UserError(f"model={path} does not exist: give a model.safetensors kept by `selfsup eval {task}`")
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    except (SafetensorError, OSError) as err:
        raise UserError(f"model={path} is not a readable safetensors file ({err})") from None
    if metadata.get("selfsup_task") != task:
        raise UserError(f"model={path} is not a kept {task} model (task: {metadata.get('selfsup_task', 'none')})")
    problem = describe_mismatch(model.state_dict(), weights)
    if problem:
        saved, now = recorded_settings(metadata), resume_settings(job, task)
        changed = [f"eval.{task}.{k}={saved[k]!r} (now {now.get(k)!r})" for k in saved if saved[k] != now.get(k)]
        why = f"it was trained with {', '.join(changed[:3])}" if changed else problem
        raise UserError(f"model={path} does not fit the {task} model these settings build: {why}")
    model.load_state_dict(weights)
