"""The pretraining loop: explicit and readable top to bottom (in the spirit of DINO's main_dino.py).

Devices, precision and DDP come from lightning-fabric; order of work is all here:
build data, model, optimizer -> resume -> for each epoch: steps (augment on device, forward, backward,
step, schedule, momentum hooks, logs) -> checkpoint with cost record -> online kNN monitor.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from lightning_fabric import Fabric
from lightning_fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from selfsup.analysis.dynamics import dynamics_record
from selfsup.config import config_digest, load_run_config, save_config, stored_config
from selfsup.data.loader import DeviceCropLoader, dataset_labels, resolve_num_workers
from selfsup.data.pipeline import data_pipeline, device_views, views_channels_last
from selfsup.data.views import split_mean_std, views_config
from selfsup.errors import UserError
from selfsup.eval.features import extract_features, labeled_split
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.settings import check_pretraining_eval
from selfsup.methods.base import Method, Schedule
from selfsup.methods.build import build_model
from selfsup.nets.activation_checkpoint import disable_activation_checkpointing, enable_activation_checkpointing
from selfsup.nets.backbones import infer_feature_dim
from selfsup.nets.compile import compile_backbones
from selfsup.nets.sync_bn import convert_sync_batchnorm
from selfsup.nets.weights import build_backbone_from_config
from selfsup.optim import (
    OPTIMIZER_OPTIONS,
    bounded_warmup,
    build_optimizer,
    cosine_weight_decay,
    param_groups,
    scale_weight_decay,
    scaled_lr,
    set_lr,
    warmup_cosine,
)
from selfsup.precision import autocast_dtype, make_fabric, resolve_device, resolve_precision, tune_device
from selfsup.runs import provenance
from selfsup.runs.checkpoint import newest_checkpoint, newest_good_checkpoint, save_checkpoint
from selfsup.runs.files import atomic_write_text, file_sha256, remove_stale_temps
from selfsup.runs.lock import RunBusy, run_lock
from selfsup.runs.outputs import enclosing_run
from selfsup.train.cost import CostRecord, count_training_flops, device_name, reset_peak_memory
from selfsup.train.guards import (
    FirstNonfinite,
    Preempted,
    StopSignals,
    TrainingFault,
    all_finite,
    available_memory,
    check_step_memory,
    check_weights_finite,
    check_writable,
    describe_good_checkpoint,
    finite_flag,
    saved_activation_bytes,
    state_bytes,
    weights_finite,
)
from selfsup.train.online_probe import OnlineLinearProbe
from selfsup.train.rng import capture_rng, restore_rng
from selfsup.train.run_settings import check_changes, record_segment, setting_changes
from selfsup.train.val_loss import ValidationLoss

# Keys that define what a run directory holds; resuming with different values would mix two runs.
IDENTITY_KEYS = ("method.name", "method.predictor.type", "backbone.name", "data.name", "views.crop_size")


def training_model(
    cfg: DictConfig, device_type: str, channels_last: bool, sync_bn: bool, init_weights: bool = False
) -> Method:
    """The method as the loop trains it: activation checkpointing, BatchNorm over the global batch and the
    memory format, as configured."""
    method = build_model(cfg, init_weights)
    if cfg.trainer.activation_checkpointing:
        enable_activation_checkpointing(method.backbone)
    if sync_bn:
        method = convert_sync_batchnorm(method, device_type)
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    return method


def check_views_fit(cfg: DictConfig, device: torch.device, local_batch: int) -> None:
    """Refuse crop and batch sizes whose backbone activations alone exceed the free memory, before anything
    of that size is allocated (views.crop_size=4096 on CIFAR used to be killed by the host's OOM killer)."""
    available = available_memory(device)
    if available is None:
        return
    with torch.random.fork_rng(devices=[]):  # the probe leaves the seeded initialisation of the run unchanged
        probe, _ = build_backbone_from_config(cfg, init_weights=False)
        if cfg.trainer.activation_checkpointing:
            enable_activation_checkpointing(probe)
        sizes = views_config(cfg.views).sizes()
        needed = sum(saved_activation_bytes(probe, size, local_batch) for size in sizes)
    check_step_memory(needed, available, f"views of {sizes} px x {local_batch} images per process", device)


def batch_plan(cfg: DictConfig, world: int) -> str:
    """Per-process batch, global batch and the lr scaling rule, as printed when a run starts or is submitted."""
    t = cfg.trainer
    local_batch = t.batch_size // (world * t.accumulate)
    peak_lr = scaled_lr(cfg.optim.base_lr, t.batch_size, cfg.optim.lr_scaling)
    return (
        f"{world} process(es) x {local_batch} per batch x {t.accumulate} accumulation = global batch {t.batch_size}; "
        f"lr {cfg.optim.base_lr} x {t.batch_size}/256 = {peak_lr:.4g} ({cfg.optim.lr_scaling} rule)"
    )


def training_optimizer(method: Method, cfg: DictConfig) -> tuple[torch.optim.Optimizer, float]:
    """The configured optimizer over the method's parameter groups, and its peak lr after batch scaling."""
    peak_lr = scaled_lr(cfg.optim.base_lr, cfg.trainer.batch_size, cfg.optim.lr_scaling)
    optimizer = build_optimizer(
        cfg.optim.name,
        param_groups(method, cfg.optim.weight_decay, cfg.optim.exclude_bias_and_norm, method.param_group_options()),
        lr=peak_lr,
        momentum=cfg.optim.momentum,
        weight_decay=cfg.optim.weight_decay,
        **{key: cfg.optim[key] for key in OPTIMIZER_OPTIONS.get(cfg.optim.name, {})},
    )
    return optimizer, peak_lr


def check_output_dir(
    cfg: DictConfig, out: Path, resumed: tuple[dict[str, Any], Path] | None
) -> dict[str, tuple[Any, Any]] | None:
    """Refuse to resume a run of another method/backbone/dataset in the same directory, or one trained with
    other settings unless resume=changed; returns the settings this start changes (None: a new run).

    The checkpoint resumed from is the authority on what ran: the command is compared with the config it
    records, and config.yaml must be what was written with it (the digest it keeps) or this command's own;
    config.yaml alone counts only where no checkpoint was saved yet."""
    saved_path = out / "config.yaml"
    if resumed is not None:
        state, path = resumed
        saved = stored_config(state.get("config"), f"the config in {path}")
    elif saved_path.is_file():
        saved = load_run_config(out)
    else:
        return None
    for key in IDENTITY_KEYS:
        old, new = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        if old != new:
            raise UserError(
                f"{out} holds a run with {key}={old}, not {new}; choose another output_dir= or remove that directory"
            )
    changes = setting_changes(saved, cfg)
    check_changes(out, changes, cfg.resume)
    if resumed is not None and cfg.resume != "changed":
        check_config_file(saved_path, resumed, config_digest(cfg))
    return changes


def check_config_file(path: Path, resumed: tuple[dict[str, Any], Path], command_digest: str) -> None:
    """config.yaml must be the one written with the checkpoint (`config_sha256`, which checkpoints older
    than it lack), or this command's: the newer segment that wrote it may have stopped before its first
    save. A deleted or edited one no longer says what trained the run."""
    state, checkpoint = resumed
    recorded = state.get("config_sha256")
    if recorded is None:
        return
    found = file_sha256(path) if path.is_file() else None
    if found not in (recorded, command_digest):
        raise UserError(
            f"{path} was {'deleted' if found is None else 'edited'} after {checkpoint} was saved (SHA-256 differs "
            f"from the one it records): put it back, or add resume=changed to continue from {checkpoint.name}'s "
            "settings and write it anew"
        )


def open_after_earlier_segments(tb_dir: Path) -> None:
    """TensorBoard reads a run's event files in name order, `events.out.tfevents.<second>.<host>.<pid>.<n>`:
    two segments of a run opened within one second (a killed one and its resume) sort by pid, and the
    earlier segment's purge could then hide the later one's steps. Wait (a second at most) until this
    segment's file sorts after every existing one; a clock far behind them is not waited for."""
    seconds = [int(f) for p in tb_dir.glob("events.out.tfevents.*") if (f := p.name.split(".")[3]).isdigit()]
    delay = max(seconds, default=0) + 1 - time.time()
    if 0 < delay <= 2:
        time.sleep(delay)


class MetricsLog:
    """metrics.jsonl (one JSON object per record) plus TensorBoard scalars, written by rank 0 only; a resumed
    run drops both logs' records after its checkpoint's step, which it redoes."""

    def __init__(self, out: Path, enabled: bool, after_step: int = 0) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.drop_records_after(after_step)
            # TensorBoard readers drop the events of earlier segments from purge_step on: the steps redone
            open_after_earlier_segments(out / "tb")
            self.tb = SummaryWriter(str(out / "tb"), purge_step=after_step + 1)

    def drop_records_after(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint: their old records (and a line cut by a
        kill) go, so that every step appears once."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        atomic_write_text(self.path, "".join(kept))

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

    def __call__(self, backbone: torch.nn.Module, probe: OnlineLinearProbe | None = None) -> dict[str, float]:
        """kNN top-1/top-5 of `backbone`, and the online linear probe's top-1/top-5 on the same test features."""
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
        scores = {"knn_top1": float(result["top1"]), "knn_top5": float(result["top5"])}
        if probe is not None:
            linear = probe.score(test.features, test.labels)
            scores.update(linear_top1=float(linear["top1"]), linear_top5=float(linear["top5"]))
        return scores


def online_probe(cfg: DictConfig, method: Method, dataset: Any, fabric: Fabric) -> OnlineLinearProbe | None:
    """eval.online_linear's classifier over the representation's features and the pretraining data's classes;
    None (with a note) when that data has no labels."""
    labels = dataset_labels(dataset)
    if not (labels >= 0).any():
        note(fabric, f"online linear probe off: the pretraining split of data={cfg.data.name} has no labels")
        return None
    dim = infer_feature_dim(method.representation(), cfg.views.crop_size)  # eval mode: no statistic or RNG touched
    return OnlineLinearProbe(dim, int(labels.max()) + 1, cfg.eval.online_linear_lr, fabric.device, cfg.seed)


def pretrain(cfg: DictConfig) -> Path:
    """Pretrain (or resume) the run described by `cfg`; returns the run directory.

    A new run that fails on bad input before its first save (an undecodable image met in the first batches)
    leaves no directory behind: a refused run never changes the output. The run's lock is held until then,
    and a start refused because another process holds it removes nothing."""
    check_pretraining_eval(cfg)  # the online monitors' settings, before the run directory is touched
    out = Path(cfg.output_dir)
    fresh = not out.exists()
    with contextlib.ExitStack() as held:
        try:
            return _pretrain(cfg, held)
        except (UserError, OSError) as err:  # OSError: a full disk or a file size limit at the first save
            refused = not isinstance(err, TrainingFault | RunBusy) and not (out / "checkpoints" / "last.pt").exists()
            if fresh and refused and int(os.environ.get("RANK", "0")) == 0:
                shutil.rmtree(out, ignore_errors=True)
            raise


def _pretrain(cfg: DictConfig, held: contextlib.ExitStack) -> Path:
    """The run itself: set up (or find it complete), then train its epochs."""
    run = setup_run(cfg, held)
    if run is not None:
        train_epochs(run)
    return Path(cfg.output_dir)


@dataclass
class Run:
    """A pretraining run once set up: what the step, end-of-epoch and save functions read and update."""

    cfg: DictConfig
    fabric: Fabric
    out: Path
    method: Method  # the module itself (hooks, state); `model` is fabric's wrapper that runs forward
    model: Any
    optimizer: torch.optim.Optimizer
    loader: Any
    sampler: Any
    augment: Any
    channels_last: bool
    local_batch: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    progress: Progress
    log: MetricsLog
    monitor: KnnMonitor | None  # rank 0 of a run on labelled data with eval.every > 0
    autocast: torch.dtype | None  # the precision's autocast dtype (None: fp32)
    validation: ValidationLoss | None  # eval.val_loss_every > 0
    first_nonfinite: FirstNonfinite

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    @property
    def is_main(self) -> bool:
        return self.fabric.global_rank == 0


def setup_run(cfg: DictConfig, held: contextlib.ExitStack) -> Run | None:
    """Devices, the run directory (locked), data, model, optimizer and the resume point; then this segment's
    config and starting checkpoint are written. None when the run is already complete."""
    t = cfg.trainer
    device_type = resolve_device(cfg.device)
    precision = resolve_precision(str(t.precision), device_type)
    processes = t.devices * t.num_nodes
    channels_last = views_channels_last(cfg, precision, device_type, processes)
    fabric = make_fabric(
        accelerator=device_type,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy="ddp" if processes > 1 else "auto",
        precision=precision,
    )
    fabric.launch()
    tune_device(device_type)
    reset_peak_memory(fabric.device)
    rank, world = fabric.global_rank, fabric.world_size
    is_main = rank == 0
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    host = enclosing_run(out.parent)
    if host is not None:  # e.g. output_dir=RUN/checkpoints: a run inside another would mix their files
        raise UserError(f"output_dir {out} lies inside the run {host}; choose an output_dir outside it")
    lock_run(fabric, out, held)
    resumed = newest_good_checkpoint(ckpt_dir, functools.partial(note, fabric))
    changes = check_output_dir(cfg, out, resumed)
    if is_main:
        stale = [*remove_stale_temps(out), *remove_stale_temps(ckpt_dir)]
        if stale:
            note(fabric, f"removed {len(stale)} temporary file(s) of interrupted saves in {out}")

    # ---- data: crop/flip batched on the device (in-memory data) or per image in workers; colour ops on the device
    seed_everything(cfg.seed, verbose=False)
    local_batch = t.batch_size // (world * t.accumulate)
    check_views_fit(cfg, fabric.device, local_batch)
    dataset, loader, sampler, augment = data_pipeline(cfg, fabric.device, rank, world, local_batch)
    steps_per_epoch = len(loader) // t.accumulate
    if steps_per_epoch == 0:
        raise UserError(f"one epoch has fewer than trainer.accumulate={t.accumulate} batches; lower it")
    total_steps = t.epochs * steps_per_epoch
    if t.max_steps is not None:
        total_steps = min(total_steps, t.max_steps)
    autocast = autocast_dtype(precision)
    online_knn = bool(cfg.eval.every) and cfg.data.eval_train_split is not None
    if cfg.eval.every and not online_knn:
        note(fabric, f"online kNN off: data={cfg.data.name} has no labels (eval.every={cfg.eval.every} ignored)")
    monitor = KnnMonitor(cfg, fabric.device, channels_last, autocast) if online_knn and is_main else None
    validation = ValidationLoss(cfg, fabric, augment, local_batch, channels_last) if cfg.eval.val_loss_every else None

    # ---- model and optimizer -------------------------------------------------------------------------
    sync_bn = bool(t.sync_batchnorm) and world > 1
    method = training_model(cfg, device_type, channels_last, sync_bn, init_weights=not any(ckpt_dir.glob("*.pt")))
    optimizer, peak_lr = training_optimizer(method, cfg)
    cost = CostRecord(devices=world, device_name=device_name(fabric.device))
    cost.flops_per_image = measure_flops(method, cfg)
    compiled = compile_backbones(method, t.compile)
    model, optimizer = fabric.setup(method, optimizer)
    probe = online_probe(cfg, method, dataset, fabric) if online_knn and cfg.eval.online_linear else None
    warmup_steps, warmup_note = bounded_warmup(int(cfg.optim.warmup_epochs * steps_per_epoch), total_steps)
    if warmup_note:
        note(fabric, f"optim.warmup_epochs={cfg.optim.warmup_epochs}: {warmup_note}")

    # ---- resume ----------------------------------------------------------------------------------------
    progress = Progress(cost=cost, probe=probe)
    if resumed is not None:
        state, path = resumed
        progress.restore(method, optimizer, state)
        note(fabric, f"resuming {out} from {path.name}: epoch {state['epoch']}, step {progress.step}")
    note(
        fabric,
        f"selfsup pretrain: {cfg.method.name} / {cfg.backbone.name} on {cfg.data.name} ({len(dataset)} images, "
        f"crops {'batched on the device' if isinstance(loader, DeviceCropLoader) else 'per image in the loader'}), "
        f"{batch_plan(cfg, world)}; precision {precision}{', channels_last' if channels_last else ''}"
        f"{', SyncBatchNorm' if sync_bn else ''}{f', {compiled} compiled backbone(s)' if compiled else ''}; "
        f"{total_steps} steps -> {out}",
    )
    if progress.step > total_steps:
        cap = f" and trainer.max_steps to {progress.step} or more" if t.max_steps is not None else ""
        raise UserError(
            f"{out} has trained {progress.step} steps, more than the {total_steps} this command asks for: set "
            f"trainer.epochs to {math.ceil(progress.step / steps_per_epoch)} or more{cap}, or choose a new output_dir="
        )
    if progress.step == total_steps:
        fabric.print(f"{out} is already complete ({progress.step} steps); nothing to do")
        return None
    if is_main:
        check_writable(out, state_bytes(method))
        save_config(cfg, out / "config.yaml")  # this segment's settings; the history keeps the earlier ones
        record_segment(out, progress.step, changes)
        if progress.step == 0:  # the starting point: evaluations and reports measure progress from random init
            save_checkpoint(progress.state(method, optimizer, cfg, steps_per_epoch), ckpt_dir / "epoch-0000.pt")
    progress.cost.devices = world
    return Run(
        cfg=cfg,
        fabric=fabric,
        out=out,
        method=method,
        model=model,
        optimizer=optimizer,
        loader=loader,
        sampler=sampler,
        augment=augment,
        channels_last=channels_last,
        local_batch=local_batch,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        peak_lr=peak_lr,
        progress=progress,
        log=MetricsLog(out, is_main, after_step=progress.step),
        monitor=monitor,
        validation=validation,
        autocast=autocast,
        first_nonfinite=FirstNonfinite(),
    )


def train_epochs(run: Run) -> None:
    """Epochs of steps until the run's last step; between them `end_of_epoch`. A stop signal saves and raises
    Preempted (mid-epoch: after the step; otherwise after the epoch); a rollback restarts its epoch."""
    t, progress, fabric = run.cfg.trainer, run.progress, run.fabric
    run.model.train()
    with StopSignals() as signals:
        while progress.step < run.total_steps:
            step = progress.step
            # Position from the step count alone, so a run resumed mid-epoch continues that epoch's order.
            epoch, done_in_epoch = divmod(step, run.steps_per_epoch)
            run.sampler.set_position(epoch, done_in_epoch * t.accumulate * run.local_batch)
            bar = tqdm(
                total=run.steps_per_epoch,
                initial=done_in_epoch,
                desc=f"epoch {epoch + 1}/{t.epochs}",
                disable=not (run.is_main and t.progress),
                dynamic_ncols=True,
                leave=False,
            )
            progress.cost.start()
            window_start, window_images = time.perf_counter(), 0
            batches = iter(run.loader)
            rolled_back = False
            for _ in range(run.steps_per_epoch - done_in_epoch):
                lr, views, labels, out_step = forward_backward(run, batches, step)
                if t.grad_clip is not None:  # the global norm, after fp16's unscaling (fabric does both)
                    fabric.clip_gradients(run.model, run.optimizer, max_norm=t.grad_clip)
                bad = guarded_optimizer_step(run.optimizer, run.method, t.nonfinite, run.first_nonfinite, step)
                if bad is not None:
                    run.optimizer.zero_grad(set_to_none=True)
                    if recover_from_nonfinite(run, epoch, bad):
                        rolled_back = True
                        break
                    step = progress.step
                    bar.update(1)
                    continue
                progress.skips = 0
                run.optimizer.zero_grad(set_to_none=True)
                run.method.after_optimizer_step(step, run.total_steps)
                if run.progress.probe is not None:
                    run.progress.probe.step(run.method.representation(), views[0], labels, run.autocast)
                step += 1
                progress.step = step
                window_images += t.batch_size
                progress.cost.images_seen += t.batch_size
                bar.update(1)
                at_log = step % t.log_every == 0 or step == run.total_steps
                if at_log:
                    rate = window_images / (time.perf_counter() - window_start)
                    window_start, window_images = time.perf_counter(), 0
                    loss = log_step(run, step, epoch, out_step, lr, rate)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                if run.is_main and run.cfg.analysis.every and step % run.cfg.analysis.every == 0:
                    with progress.cost.excluded(fabric.device):
                        run.log.write(step, {**dynamics_record(run.method, views), "epoch": epoch})
                # Every process stops at the same step: alone at once, together at the next log interval.
                stop = any_process(fabric, signals) if fabric.world_size == 1 or at_log else False
                mid_epoch = step % run.steps_per_epoch != 0 and step < run.total_steps
                step_save = bool(t.checkpoint_every_steps) and step % (t.checkpoint_every_steps or 1) == 0
                if mid_epoch and (stop or step_save):
                    progress.cost.stop(fabric.device)
                    stop_at_nonfinite(run)
                    write_last(run, step)
                    fabric.barrier()
                    if stop:
                        bar.close()
                        raise Preempted(signals.received or signal.SIGTERM, step)
                    progress.cost.start()
                if step >= run.total_steps or stop:
                    break
            bar.close()
            progress.cost.stop(fabric.device)
            if rolled_back:
                continue
            progress.cost.update_memory(fabric.device)
            end_of_epoch(run, step)
            fabric.barrier()
            if progress.step < run.total_steps and any_process(fabric, signals):
                raise Preempted(signals.received or signal.SIGTERM, progress.step)
    run.log.close()
    fabric.print(f"finished {progress.step} steps; run directory: {run.out}")


def forward_backward(
    run: Run, batches: Any, step: int
) -> tuple[float, list[torch.Tensor], torch.Tensor, dict[str, Any]]:
    """One optimizer step's forward and backward passes (trainer.accumulate micro-batches) at the step's lr,
    then the gradients of the parameters frozen at this step dropped (before clipping, the non-finite check
    and the optimizer step); returns the lr, the last micro-batch's views and labels, and the method's outputs
    for it."""
    t = run.cfg.trainer
    lr = warmup_cosine(step, run.total_steps, run.warmup_steps, run.peak_lr, run.cfg.optim.final_lr)
    lr *= run.progress.lr_scale
    set_lr(run.optimizer, lr, run.peak_lr)
    optim = run.cfg.optim
    if optim.final_weight_decay is not None:
        wd = cosine_weight_decay(step, run.total_steps, optim.weight_decay, optim.final_weight_decay)
        scale_weight_decay(run.optimizer, wd / optim.weight_decay)
    schedule = Schedule(step, run.total_steps, run.steps_per_epoch)
    for micro in range(t.accumulate):
        batch, labels = next(batches)
        views = device_views(batch, run.augment, run.fabric.device, run.channels_last)
        with run.fabric.no_backward_sync(run.model, enabled=micro < t.accumulate - 1):
            out_step = run.model(views, schedule=schedule)
            run.fabric.backward(out_step["loss"] / t.accumulate)
    run.method.drop_frozen_gradients(schedule)
    return lr, views, labels, out_step


def log_step(run: Run, step: int, epoch: int, out_step: dict[str, Any], lr: float, rate: float) -> float:
    """The training record at a log step (the step's only host sync, after the non-finite check); returns the
    loss averaged over processes."""
    stop_at_nonfinite(run)
    reduced = run.fabric.all_reduce({k: v.detach().float().mean() for k, v in out_step.items()}, reduce_op="mean")
    logs = {k: float(v) for k, v in reduced.items()}
    record = {**{f"train/{k}": v for k, v in logs.items()}, "train/lr": lr, "train/img_per_s": rate, "epoch": epoch}
    run.log.write(step, record)
    return logs["loss"]


def write_last(run: Run, step: int, *extra: Path) -> None:
    """last.pt (and `extra`) at `step`, its weights checked finite: a saved checkpoint is always finite. The
    steps' own non-finite check (`stop_at_nonfinite`) comes first, by the caller."""
    if run.is_main:
        check_weights_finite(run.method, step, newest_checkpoint(run.ckpt_dir))
        state = run.progress.state(run.method, run.optimizer, run.cfg, run.steps_per_epoch)
        save_checkpoint(state, run.ckpt_dir / "last.pt", *extra)


def end_of_epoch(run: Run, step: int) -> None:
    """The held-out loss (every process), the checkpoint and the online kNN monitor (rank 0), logged."""
    cfg, t = run.cfg, run.cfg.trainer
    epoch, epoch_done, finished = step // run.steps_per_epoch, step % run.steps_per_epoch == 0, step >= run.total_steps
    stop_at_nonfinite(run)
    val_loss = None
    if run.validation is not None and epoch_done and (epoch % cfg.eval.val_loss_every == 0 or finished):
        val_loss = run.validation(run.method, run.model, Schedule(step, run.total_steps, run.steps_per_epoch))
        note(run.fabric, f"epoch {epoch}: held-out loss {val_loss:.4f}")
    saves_epoch = epoch_done and (epoch % t.checkpoint_every == 0 or finished)
    write_last(run, step, *([run.ckpt_dir / f"epoch-{epoch:04d}.pt"] if saves_epoch else []))
    if not run.is_main:
        return
    cost = run.progress.cost.as_dict()
    record: dict[str, Any] = {
        "epoch": epoch,
        **{f"cost/{k}": v for k, v in cost.items() if isinstance(v, (int, float))},
    }
    if val_loss is not None:
        record["val/loss"] = val_loss
    if run.monitor is not None and (epoch % cfg.eval.every == 0 or finished) and epoch_done:
        scores = run.monitor(run.method.representation(), run.progress.probe)
        record.update({f"monitor/{k}": v for k, v in scores.items()})
        linear = f", online linear top-1 {scores['linear_top1']:.2f}%" if "linear_top1" in scores else ""
        note(run.fabric, f"epoch {epoch}: kNN top-1 {scores['knn_top1']:.2f}%{linear}")
    run.log.write(step, record)


def note(fabric: Fabric, message: str) -> None:
    """Progress notes (the start banner, resumes, monitors, fault actions) go to stderr from rank 0, so that
    stdout carries the command's result alone: the line naming the run directory."""
    if fabric.is_global_zero:
        print(message, file=sys.stderr, flush=True)


def lock_run(fabric: Fabric, out: Path, held: contextlib.ExitStack) -> None:
    """Rank 0 takes the run directory's lock into `held`; a refusal stops every process with its one line
    (the others would otherwise die waiting for rank 0 in the first collective)."""
    refusal = None
    if fabric.global_rank == 0:
        try:
            held.enter_context(run_lock(out))
        except UserError as err:
            refusal = err
    if fabric.world_size > 1:
        refusal = fabric.broadcast(refusal)
    if refusal is not None:
        raise refusal


def guarded_optimizer_step(
    optimizer: torch.optim.Optimizer, method: Method, policy: str, first_nonfinite: FirstNonfinite, step: int
) -> str | None:
    """The optimizer step under trainer.nonfinite: returns what was not finite ("gradients or buffers": no
    update applied; "weights": an update overflowed), or None. Under `stop` the check is recorded on the
    device and read at the next log (no host sync per step); skip and rollback decide at every step."""
    if policy == "stop":
        first_nonfinite.record(finite_flag(method), step)
    elif not all_finite(method):
        return "gradients or buffers"
    optimizer.step()
    if policy != "stop" and not weights_finite(method):
        return "weights"  # finite gradients, an overflowing update: only a rollback undoes it
    return None


def recover_from_nonfinite(run: Run, epoch: int, bad: str) -> bool:
    """trainer.nonfinite for the step at `progress.step` (in `epoch`), whose `bad` (gradients, buffers or
    weights) are not finite: skip it (the step counts, nothing is applied) or roll back to the newest checkpoint
    that verifies; raises when the policy stops the run. Returns whether it rolled back (the epoch restarts)."""
    fabric, progress, log = run.fabric, run.progress, run.log
    step = progress.step
    if progress.on_nonfinite(run.cfg.trainer, step, newest_checkpoint(run.ckpt_dir), bad) == "skip":
        note(fabric, f"step {step + 1}: non-finite {bad}; skipped ({progress.skips} in a row)")
        progress.step = step + 1
        log.write(progress.step, {"train/nonfinite_skips": progress.skips, "epoch": epoch})
        return False
    resumed = newest_good_checkpoint(run.ckpt_dir, functools.partial(note, fabric))
    assert resumed is not None  # a rollback is only chosen with a checkpoint on disk
    state, path = resumed
    note(
        fabric,
        f"step {step + 1}: non-finite {bad}; rolled back to {path.name} with the lr x {progress.lr_scale:g} "
        f"(rollback {progress.rollbacks})",
    )
    progress.restore(run.method, run.optimizer, state, rollback=True)
    log.drop_records_after(progress.step)  # the discarded steps are redone and logged anew
    log.write(progress.step, {"train/rollbacks": progress.rollbacks, "epoch": epoch})
    return True


def stop_at_nonfinite(run: Run) -> None:
    """trainer.nonfinite=stop: raise, naming the first non-finite step recorded since the last check."""
    bad_step = run.first_nonfinite.first()
    if bad_step is not None:
        run.progress.on_nonfinite(run.cfg.trainer, bad_step, newest_checkpoint(run.ckpt_dir))


def any_process(fabric: Fabric, signals: StopSignals) -> bool:
    """Whether any process received a stop signal (a collective: every process must call it together)."""
    if fabric.world_size == 1:
        return signals.received is not None
    flag = torch.tensor(float(signals.received is not None), device=fabric.device)
    return bool(fabric.all_reduce(flag, reduce_op="max") > 0)


@dataclass
class Progress:
    """Where a run stands and what it has spent: what a checkpoint restores besides weights and optimizer."""

    cost: CostRecord
    probe: OnlineLinearProbe | None = None  # eval.online_linear: saved and restored with the run
    step: int = 0
    lr_scale: float = 1.0  # lowered by every non-finite rollback
    skips: int = 0  # non-finite steps skipped in a row
    rollbacks: int = 0

    def state(
        self, method: Method, optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int
    ) -> dict[str, Any]:
        """Everything a checkpoint holds: weights, optimizer, position, RNG, cost record and provenance."""
        return {
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": self.step // steps_per_epoch,
            "step": self.step,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "rng": capture_rng(),
            "cost": self.cost.as_dict(),
            "config": OmegaConf.to_container(cfg),
            "config_sha256": config_digest(cfg),
            **({"online_linear": self.probe.state_dict()} if self.probe is not None else {}),
            **provenance.source(),
        }

    def restore(
        self, method: Method, optimizer: torch.optim.Optimizer, state: dict[str, Any], rollback: bool = False
    ) -> None:
        """Continue from a checkpoint. A rollback keeps its lowered lr, its count and the cost record: the
        compute spent on the steps it discards was spent all the same."""
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]
        if not rollback:
            self.cost = CostRecord.from_dict(state["cost"])
            self.lr_scale, self.rollbacks = state.get("lr_scale", 1.0), state.get("rollbacks", 0)
        if "rng" in state:
            restore_rng(state["rng"])
        if self.probe is not None and "online_linear" in state:  # a run that turns the probe on starts it afresh
            self.probe.load_state_dict(state["online_linear"])

    def on_nonfinite(
        self, trainer: DictConfig, step: int, good: Path | None, bad: str = "gradients or buffers"
    ) -> Literal["skip", "rollback"]:
        """Decide trainer.nonfinite for a bad step and count it; raises when the run must stop.
        Non-finite weights come from an update already applied, which skip cannot undo: both policies roll
        back to `good`, the newest checkpoint (epoch-0000.pt before the first save)."""
        policy = trainer.nonfinite
        if policy == "skip" and bad != "weights" and self.skips < trainer.nonfinite_max:
            self.skips += 1
            return "skip"
        rollback = policy == "rollback" or (policy == "skip" and bad == "weights")
        if rollback and self.rollbacks < trainer.nonfinite_max and good is not None:
            self.rollbacks += 1
            self.lr_scale *= trainer.nonfinite_lr_factor
            return "rollback"
        raise TrainingFault(
            f"non-finite {bad} at step {step + 1} (trainer.nonfinite={policy}); {describe_good_checkpoint(good)}; "
            + (
                "lower optim.base_lr, or set trainer.nonfinite=skip|rollback"
                if policy == "stop"
                else "lower optim.base_lr"
            )
        )


def measure_flops(method: Method, cfg: DictConfig) -> float | None:
    """FLOPs per source image of a training step, on a 2-image batch (BatchNorm needs 2) of every crop."""
    views = [torch.rand(2, 3, size, size) for size in views_config(cfg.views).sizes()]
    # A copy, so that neither BatchNorm statistics nor gradients of the real model change; model FLOPs,
    # without activation checkpointing's recomputation.
    model = copy.deepcopy(method)
    disable_activation_checkpointing(model)
    return count_training_flops(lambda crops: model(crops, schedule=Schedule(0, 1, 1)), views) / 2
