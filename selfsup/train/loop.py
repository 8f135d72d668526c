"""The pretraining loop: explicit and readable top to bottom (in the spirit of DINO's main_dino.py).

Devices, precision and DDP come from lightning-fabric; order of work is all here:
build data, model, optimizer -> resume -> for each epoch: steps (augment on device, forward, backward,
step, schedule, momentum hooks, logs) -> checkpoint with cost record -> online kNN monitor.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from selfsup.analysis.dynamics import dynamics_record
from selfsup.config import save_config
from selfsup.data.loader import Transformed, pretrain_dataset, resolve_num_workers, train_loader
from selfsup.data.views import BatchAugment, CropFlip, crops_of_batch, views_config
from selfsup.errors import UserError
from selfsup.eval.features import extract_features, labeled_split, split_mean_std
from selfsup.eval.knn import knn_accuracy
from selfsup.methods.base import Method, build_method
from selfsup.nets.backbones import build_backbone, use_cifar_stem
from selfsup.train.checkpoint import load_checkpoint, save_checkpoint
from selfsup.train.cost import CostRecord, count_training_flops, device_name
from selfsup.train.optim import build_optimizer, param_groups, scaled_lr, set_lr, warmup_cosine
from selfsup.train.precision import resolve_device, resolve_precision

# Keys that define what a run directory holds; resuming with different values would mix two runs.
IDENTITY_KEYS = ("method.name", "method.predictor.type", "backbone.name", "data.name", "views.crop_size")


@functools.cache
def git_commit() -> str | None:
    """The source commit, recorded with every checkpoint and result for provenance (asked once)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def build_model(cfg: DictConfig) -> Method:
    """Backbone + method from a config; also used by evaluation to rebuild a checkpoint's network."""
    cifar_stem = use_cifar_stem(cfg.backbone.cifar_stem, cfg.views.crop_size)
    backbone, feature_dim = build_backbone(cfg.backbone.name, cifar_stem, cfg.backbone.zero_init_residual)
    return build_method(cfg, backbone, feature_dim)


def check_output_dir(cfg: DictConfig, out: Path) -> None:
    """Refuse to resume a run of another method/backbone/dataset in the same directory."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = OmegaConf.load(saved_path)
    for key in IDENTITY_KEYS:
        old, new = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if old != new:
            raise UserError(
                f"{out} holds a run with {key}={old}, not {new}; choose another output_dir= or remove that directory"
            )


class MetricsLog:
    """metrics.jsonl (one JSON object per record) plus TensorBoard scalars, written by rank 0 only."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))

    def write(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **record}) + "\n")
        for key, value in record.items():
            if isinstance(value, (int, float)) and self.tb is not None:
                self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class KnnMonitor:
    """Online kNN accuracy of the backbone on the labeled eval splits, every `eval.every` epochs."""

    def __init__(self, cfg: DictConfig, device: torch.device, channels_last: bool, autocast_dtype) -> None:
        self.cfg = cfg
        self.device = device
        self.channels_last = channels_last
        self.autocast_dtype = autocast_dtype
        self.mean, self.std = split_mean_std(cfg.data, cfg.views)
        self.train = labeled_split(cfg.data, "eval_train_split", cfg.views.crop_size, cfg.eval.train_subset, cfg.seed)
        self.test = labeled_split(cfg.data, "test_split", cfg.views.crop_size)

    def __call__(self, backbone: torch.nn.Module) -> dict[str, float]:
        kwargs = dict(
            mean=self.mean,
            std=self.std,
            device=self.device,
            batch_size=self.cfg.eval.batch_size,
            num_workers=resolve_num_workers(self.cfg.trainer.num_workers, self.device.type, 1),
            channels_last=self.channels_last,
            autocast_dtype=self.autocast_dtype,
        )
        train = extract_features(backbone, self.train, **kwargs)
        test = extract_features(backbone, self.test, **kwargs)
        num_classes = int(max(train.labels.max(), test.labels.max())) + 1
        result = knn_accuracy(
            train.features,
            train.labels,
            test.features,
            test.labels,
            num_classes,
            k=self.cfg.eval.knn.k,
            temperature=self.cfg.eval.knn.temperature,
        )
        return {"knn_top1": float(result["top1"]), "knn_top5": float(result["top5"])}


def pretrain(cfg: DictConfig) -> Path:
    """Pretrain (or resume) the run described by `cfg`; returns the run directory."""
    t = cfg.trainer
    device_type = resolve_device(cfg.device)
    precision = resolve_precision(str(t.precision), device_type)
    channels_last = precision == "bf16-mixed" if t.channels_last == "auto" else bool(t.channels_last)
    processes = t.devices * t.num_nodes
    fabric = Fabric(
        accelerator=device_type,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy="ddp" if processes > 1 else "auto",
        precision=precision,
    )
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    is_main = rank == 0
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    check_output_dir(cfg, out)

    # ---- data: crop/flip per sample in workers; colour ops batched on the device -------------------
    seed_everything(cfg.seed, verbose=False)
    local_batch = t.batch_size // (world * t.accumulate)
    dataset = Transformed(pretrain_dataset(cfg.data, cfg.seed), CropFlip(cfg.views))
    num_workers = resolve_num_workers(t.num_workers, device_type, t.devices)
    loader, sampler = train_loader(
        dataset, local_batch, num_workers, cfg.seed, rank, world, pin_memory=device_type == "cuda"
    )
    mean, std = split_mean_std(cfg.data, cfg.views)
    augment = BatchAugment(cfg.views, mean, std).to(fabric.device)
    steps_per_epoch = len(loader) // t.accumulate
    if steps_per_epoch == 0:
        raise UserError(f"one epoch has fewer than trainer.accumulate={t.accumulate} batches; lower it")
    total_steps = t.epochs * steps_per_epoch
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)
    autocast_dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    monitor = KnnMonitor(cfg, fabric.device, channels_last, autocast_dtype) if cfg.eval.every and is_main else None

    # ---- model and optimizer -------------------------------------------------------------------------
    method = build_model(cfg)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    peak_lr = scaled_lr(cfg.optim.base_lr, t.batch_size, cfg.optim.lr_scaling)
    optimizer = build_optimizer(
        cfg.optim.name,
        param_groups(method, cfg.optim.weight_decay, cfg.optim.exclude_bias_and_norm, method.fixed_lr_modules()),
        lr=peak_lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
    )
    method.set_schedule(steps_per_epoch, total_steps)
    cost = CostRecord(devices=world, device_name=device_name(fabric.device))
    cost.flops_per_image = measure_flops(method, cfg)
    model, optimizer = fabric.setup(method, optimizer)
    warmup_steps = int(cfg.optim.warmup_epochs * steps_per_epoch)
    if warmup_steps >= total_steps:
        warmup_steps = total_steps // 10
        fabric.print(
            f"optim.warmup_epochs={cfg.optim.warmup_epochs} is as long as the run: warmup shortened to "
            f"{warmup_steps} steps (10% of {total_steps})"
        )

    # ---- resume ----------------------------------------------------------------------------------------
    step = 0
    last = ckpt_dir / "last.pt"
    if last.is_file():
        state = load_checkpoint(last)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        cost = CostRecord.from_dict(state["cost"])
        fabric.print(f"resuming {out} from {last.name}: epoch {state['epoch']}, step {step}")
    if is_main:
        save_config(cfg, out / "config.yaml")
        if step == 0:  # the starting point: evaluations and reports measure progress from random init
            save_checkpoint(training_state(method, optimizer, 0, 0, cost, cfg), ckpt_dir / "epoch-0000.pt")
    fabric.print(
        f"selfsup pretrain: {cfg.method.name} / {cfg.backbone.name} on {cfg.data.name} ({len(dataset)} images), "
        f"{world} process(es) x {local_batch} per batch x {t.accumulate} accumulation = global batch {t.batch_size}; "
        f"lr {cfg.optim.base_lr} x {t.batch_size}/256 = {peak_lr:.4g} ({cfg.optim.lr_scaling} rule); "
        f"precision {precision}{', channels_last' if channels_last else ''}; {total_steps} steps -> {out}"
    )
    if step >= total_steps:
        fabric.print(f"{out} is already complete ({step} steps); nothing to do")
        return out

    log = MetricsLog(out, is_main)
    cost.devices = world
    model.train()
    while step < total_steps:
        # Position from the step count alone, so a run resumed mid-epoch continues that epoch's order.
        epoch, done_in_epoch = divmod(step, steps_per_epoch)
        sampler.set_position(epoch, done_in_epoch * t.accumulate * local_batch)
        bar = tqdm(
            total=steps_per_epoch,
            initial=done_in_epoch,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=not (is_main and t.progress),
            dynamic_ncols=True,
            leave=False,
            file=sys.stdout,
        )
        cost.start()
        window_start, window_images = time.perf_counter(), 0
        batches = iter(loader)
        for _ in range(steps_per_epoch - done_in_epoch):
            lr = warmup_cosine(step, total_steps, warmup_steps, peak_lr, cfg.optim.final_lr)
            set_lr(optimizer, lr, peak_lr)
            method.current_step = step
            for micro in range(t.accumulate):
                batch, _labels = next(batches)
                views = [augment(c, v) for v, c in enumerate(crops_of_batch(batch, fabric.device))]
                if channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                with fabric.no_backward_sync(model, enabled=micro < t.accumulate - 1):
                    out_step = model(views)
                    fabric.backward(out_step["loss"] / t.accumulate)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            method.after_optimizer_step(step, total_steps)
            step += 1
            window_images += t.batch_size
            cost.images_seen += t.batch_size
            bar.update(1)
            if step % t.log_every == 0 or step == total_steps:
                # The only host sync of the step, once per log interval.
                reduced = fabric.all_reduce(
                    {k: v.detach().float().mean() for k, v in out_step.items()}, reduce_op="mean"
                )
                logs = {k: float(v) for k, v in reduced.items()}
                if not math.isfinite(logs["loss"]):
                    raise RuntimeError(f"loss became {logs['loss']} at step {step}; lower optim.base_lr")
                rate = window_images / (time.perf_counter() - window_start)
                window_start, window_images = time.perf_counter(), 0
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                log.write(
                    step,
                    {
                        **{f"train/{k}": v for k, v in logs.items()},
                        "train/lr": lr,
                        "train/img_per_s": rate,
                        "epoch": epoch,
                    },
                )
            if is_main and cfg.analysis.every and step % cfg.analysis.every == 0:
                log.write(step, {**dynamics_record(method, views), "epoch": epoch})
            if step >= total_steps:
                break
        bar.close()
        cost.stop()
        cost.update_memory(fabric.device)
        epoch, epoch_done = step // steps_per_epoch, step % steps_per_epoch == 0
        # ---- checkpoint (rank 0) and online monitor -----------------------------------------------------
        if is_main:
            state = training_state(method, optimizer, epoch, step, cost, cfg)
            paths = [last]
            finished = step >= total_steps
            if epoch_done and (epoch % t.checkpoint_every == 0 or finished):
                paths.append(ckpt_dir / f"epoch-{epoch:04d}.pt")
            save_checkpoint(state, *paths)
            record: dict[str, Any] = {
                "epoch": epoch,
                **{f"cost/{k}": v for k, v in cost.as_dict().items() if isinstance(v, (int, float))},
            }
            if monitor is not None and (epoch % cfg.eval.every == 0 or finished) and epoch_done:
                record.update({f"monitor/{k}": v for k, v in monitor(method.representation()).items()})
                fabric.print(f"epoch {epoch}: kNN top-1 {record['monitor/knn_top1']:.2f}%")
            log.write(step, record)
        fabric.barrier()
    log.close()
    fabric.print(f"finished {step} steps; run directory: {out}")
    return out


def training_state(
    method: Method, optimizer: torch.optim.Optimizer, epoch: int, step: int, cost: CostRecord, cfg: DictConfig
) -> dict[str, Any]:
    """Everything a checkpoint holds: weights, optimizer, position, cost record and provenance."""
    return {
        "model": method.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "step": step,
        "cost": cost.as_dict(),
        "config": OmegaConf.to_container(cfg),
        "git_commit": git_commit(),
    }


def measure_flops(method: Method, cfg: DictConfig) -> float | None:
    """FLOPs per source image of a training step, on a 2-image batch (BatchNorm needs 2) of every crop."""
    views = [torch.rand(2, 3, size, size) for size in views_config(cfg.views).sizes()]
    # A copy, so that neither BatchNorm statistics nor gradients of the real model change.
    return count_training_flops(copy.deepcopy(method), views) / 2
