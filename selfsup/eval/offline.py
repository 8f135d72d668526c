"""`selfsup eval TASK run=DIR`: evaluate a checkpoint and write JSON with provenance.

kNN and linear probes measure the frozen representation; fine-tuning, detection and segmentation train
the pretrained backbone further on a downstream task (eval/finetune.py, detection.py, segmentation.py).

Features of each split are cached next to the results, keyed by the checkpoint's hash and the
transform, so kNN and linear evaluation of the same checkpoint extract them once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from selfsup.data.loader import dataset_classes, resolve_num_workers
from selfsup.data.views import split_mean_std
from selfsup.errors import UserError
from selfsup.eval.features import Features, extract_features, labeled_split
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import train_linear_probe
from selfsup.eval.settings import evaluation_config
from selfsup.eval.transfer import TaskResult, TransferJob
from selfsup.methods.base import Method
from selfsup.methods.build import build_model
from selfsup.nets.weights import describe_mismatch
from selfsup.precision import resolve_device
from selfsup.registry import close_matches_hint
from selfsup.runs.checkpoint import load_checkpoint, resolve_checkpoint
from selfsup.runs.files import atomic_torch_save, atomic_write_text, file_sha256
from selfsup.runs.provenance import source

FEATURE_TASKS = ("knn", "linear")
TRANSFER_TASKS = {
    "finetune": "selfsup.eval.finetune",
    "detection": "selfsup.eval.detection",
    "segmentation": "selfsup.eval.segmentation",
}
TASKS = (*FEATURE_TASKS, *TRANSFER_TASKS)


def cached_features(
    cfg: DictConfig, backbone: torch.nn.Module, split_key: str, cache_dir: Path, ckpt_hash: str, device: torch.device
) -> Features:
    """Extract (or reuse) the features of `data.<split_key>`; the cache is invalid once its key changes."""
    mean, std = split_mean_std(cfg.data, cfg.views)
    key = {
        "checkpoint_sha256": ckpt_hash,
        "dataset": cfg.data.name,
        "root": str(cfg.data.root),
        "split": cfg.data[split_key],
        "subset": cfg.eval.train_subset if split_key == "eval_train_split" else None,
        "crop_size": cfg.views.crop_size,
        "mean": list(mean),
        "std": list(std),
    }
    path = cache_dir / f"features-{cfg.data[split_key]}.pt"
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("key") == key:
            return Features(cached["features"], cached["labels"])
    dataset = labeled_split(cfg.data, split_key, cfg.views.crop_size, key["subset"], cfg.seed)
    feats = extract_features(
        backbone,
        dataset,
        mean,
        std,
        device,
        batch_size=cfg.eval.batch_size,
        num_workers=resolve_num_workers(cfg.trainer.num_workers, device.type, 1),
    )
    names = dataset_classes(dataset)  # for the report's legends
    atomic_torch_save({"key": key, "features": feats.features, "labels": feats.labels, "classes": names}, path)
    return feats


def load_method(cfg: DictConfig, ckpt_path: Path) -> tuple[Method, dict[str, Any]]:
    """Rebuild the run's model and load a checkpoint into it strictly (every key must match). The checkpoint
    is the authority on what ran: a config naming another method or backbone is refused before it builds."""
    state = load_checkpoint(ckpt_path)
    ran = state.get("config")
    for section in ("method", "backbone"):
        trained = ran[section]["name"] if isinstance(ran, dict) and isinstance(ran.get(section), dict) else None
        if trained is not None and trained != cfg[section].name:
            raise UserError(
                f"the run's config names {section} {cfg[section].name}, but {ckpt_path} was trained with {trained}: "
                "restore the run's config.yaml"
            )
    method = build_model(cfg)
    problem = describe_mismatch(method.state_dict(), state["model"])
    if problem:
        raise UserError(f"{ckpt_path} does not fit {cfg.method.name} with backbone {cfg.backbone.name}: {problem}")
    method.load_state_dict(state["model"])
    return method, state


def task_settings(cfg: DictConfig, task: str) -> dict[str, Any]:
    """The settings a result depends on: a finished result with other settings is stale. Worker counts and
    chunk sizes change how a task runs, not what it measures, so they are left out."""
    section = OmegaConf.to_container(cfg.eval[task])
    if task in FEATURE_TASKS:
        section["train_subset"] = cfg.eval.train_subset
    return {k: v for k, v in section.items() if k not in ("num_workers", "chunk_epochs")}


def score_features(
    task: str, cfg: DictConfig, train: Features, test: Features, device: str = "cpu", progress: bool = False
) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """kNN or a linear probe (`task`, settings from cfg.eval.<task>) of labeled train/test features.
    Returns the settings, the scores (top1, top5, train_loss) and what else the task reported."""
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    params = OmegaConf.to_container(cfg.eval[task])
    if task == "knn":
        metrics = knn_accuracy(train.features, train.labels, test.features, test.labels, num_classes, **params)
    else:
        metrics = train_linear_probe(
            train.features,
            train.labels,
            test.features,
            test.labels,
            num_classes,
            seed=cfg.seed,
            device=device,
            progress=progress,
            **params,
        )
    scores = {k: float(v) for k, v in metrics.items() if k in ("top1", "top5", "train_loss")}
    return params, scores, {k: v for k, v in metrics.items() if k not in scores}


def feature_task(
    task: str, cfg: DictConfig, method: Method, ckpt_hash: str, out_dir: Path, device: torch.device
) -> TaskResult:
    """kNN or a linear probe on the cached frozen features of `Method.representation()`. A refusal met on
    the way (a test split that does not exist, after the train features were saved) removes the feature
    files and folders this call made: a refused evaluation leaves the run as it was."""
    representation = method.representation().to(device)
    made = [folder for folder in (out_dir.parent, out_dir) if not folder.exists()]
    before = set(out_dir.glob("features-*.pt"))
    try:
        train = cached_features(cfg, representation, "eval_train_split", out_dir, ckpt_hash, device)
        test = cached_features(cfg, representation, "test_split", out_dir, ckpt_hash, device)
        params, scores, extra = score_features(
            task, cfg, train, test, device=str(device), progress=bool(cfg.trainer.progress)
        )
    except UserError:
        for path in set(out_dir.glob("features-*.pt")) - before:
            path.unlink()
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                folder.rmdir()
        raise
    params.update(extra)  # the probe's effective lr etc.
    dataset = {
        "name": cfg.data.name,
        "train_split": cfg.data.eval_train_split,
        "test_split": cfg.data.test_split,
        "train_size": len(train.labels),
        "test_size": len(test.labels),
    }
    return TaskResult(metrics=scores, params=params, dataset=dataset)


def transfer_task(
    task: str, cfg: DictConfig, method: Method, out_dir: Path, device: torch.device, model: Path | None = None
) -> TaskResult:
    """Fine-tuning, detection or segmentation of the pretrained backbone (tasks import torchvision heads
    and pycocotools, so each is imported only when asked for). A finished training keeps its model in
    out_dir/<task>/model.safetensors; `model` scores such a kept model instead of training."""
    module = importlib.import_module(TRANSFER_TASKS[task])
    job = TransferJob(
        cfg=cfg,
        backbone=method.backbone,
        feature_dim=method.feature_dim,
        device=device,
        state_path=out_dir / f"{task}-state.pt",
        progress=cfg.trainer.progress,
        model_path=kept_model_path(out_dir, task),
        model_weights=model,
    )
    return module.run(job)


def kept_model_path(out_dir: Path, task: str) -> Path:
    """Where a finished transfer training keeps its model: eval/<checkpoint>/<task>/model.safetensors."""
    return out_dir / task / "model.safetensors"


def chunk_history(path: Path, result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every chunk's score so far: a training in chunks rewrites `<task>.json` after each chunk (`metrics` is
    the last), so the earlier chunks' scores travel on in `history`. An earlier file that is complete, or of
    another checkpoint or other settings, is another training: its history ends there."""
    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        previous = {}
    same_training = (
        previous.get("complete") is False
        and previous.get("checkpoint", {}).get("sha256") == result["checkpoint"]["sha256"]
        and previous.get("settings") == result["settings"]
    )
    earlier = previous.get("history", []) if same_training else []
    chunk = {"epochs_trained": result["extra"].get("epochs_trained"), "metrics": result["metrics"]}
    return [*earlier, chunk]


def evaluate(
    task: str,
    run_dir: Path,
    checkpoint: str = "last",
    overrides: list[str] | None = None,
    model: Path | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint of a run on `task` and write `eval/<checkpoint>/<task>.json`.

    A transfer task that stops at `chunk_epochs` writes its result with `complete: false` and keeps its
    state; the same command continues it. With `model` (a kept transfer model) nothing is trained: that
    model is scored on the test split these settings name, and the result goes beside it as
    `<model>-score.json`."""
    if task not in TASKS:
        raise UserError(
            f"unknown evaluation {task!r}{close_matches_hint(task, list(TASKS))}; choose one of {', '.join(TASKS)}"
        )
    if model is not None and task in FEATURE_TASKS:
        raise UserError(f"model= scores a kept {' | '.join(TRANSFER_TASKS)} model; {task} keeps none")
    run_dir = Path(run_dir)
    cfg = evaluation_config(run_dir, overrides or [])
    ckpt_path = resolve_checkpoint(run_dir, checkpoint)
    device = torch.device(resolve_device(cfg.device))
    started = time.perf_counter()
    method, state = load_method(cfg, ckpt_path)
    ckpt_hash = file_sha256(ckpt_path)
    out_dir = run_dir / "eval" / ckpt_path.stem
    if task in FEATURE_TASKS:
        outcome = feature_task(task, cfg, method, ckpt_hash, out_dir, device)
    else:
        outcome = transfer_task(task, cfg, method, out_dir, device, model)
    result = {
        "task": task,
        "complete": outcome.complete,
        "metrics": {k: float(v) for k, v in outcome.metrics.items()},
        "params": outcome.params,
        "settings": task_settings(cfg, task),
        "dataset": outcome.dataset,
        "checkpoint": {"path": str(ckpt_path), "sha256": ckpt_hash, "epoch": state["epoch"], "step": state["step"]},
        "cost": state["cost"],
        "eval_cost": {"seconds": time.perf_counter() - started, "device": str(device)},
        "extra": outcome.extra,
        "config": OmegaConf.to_container(cfg),
        **source(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if model is not None:
        result["model"] = {"path": str(model), "sha256": file_sha256(model)}
    path = model.with_name(f"{model.stem}-score.json") if model is not None else out_dir / f"{task}.json"
    if task in TRANSFER_TASKS and model is None:
        result["history"] = chunk_history(path, result)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    if outcome.complete and model is None:
        (out_dir / f"{task}-state.pt").unlink(missing_ok=True)
    result["path"] = str(path)
    return result
