"""`selfsup bench`: where the time of a pretraining step goes on this device, and what fits in memory.

Three rates for one method / backbone / batch, in source images per second (an image is counted once
however many views it gives, as `train/img_per_s` in metrics.jsonl):

- compute: the method's forward, backward and optimizer step on pre-made views already on the device,
  for each precision variant (fp32, fp32 channels_last, bf16 autocast + channels_last). The best variant
  is the compute limit of this device for this model.
- loader: the data path alone (decode, crop and flip in the loader, colour ops batched on the device).
- full: the real pretraining loop (`selfsup pretrain`, default settings) end to end.

full / compute says how close the loop runs to the limit; loader / full how much headroom the data path
has. Each measurement runs in its own process, so its peak memory (GPU allocations, or the process's
resident set on CPU) is its own. `memory_budget_gb=` adds the largest batch whose training step fits.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from lightning_fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf

from selfsup.errors import UserError
from selfsup.methods.base import Schedule
from selfsup.nets.compile import compile_backbones
from selfsup.precision import make_fabric, resolve_device, resolve_precision, tune_device
from selfsup.runs.files import atomic_write_text
from selfsup.settings import TEXT, Count, Positive, PositiveInt, list_of, one_of, optional
from selfsup.train.cost import device_name, peak_memory_bytes

STAGES = ("compute", "loader", "full")
# variant -> (lightning-fabric precision, channels_last)
VARIANTS = {"fp32": ("32-true", False), "channels_last": ("32-true", True), "bf16": ("bf16-mixed", True)}
PROBE_BATCHES = (16, 32)  # batches whose peak memory fixes the linear model of memory vs batch


def default_variants(device_type: str) -> list[str]:
    """fp32 and channels_last everywhere; bf16 only where the device computes it natively (emulated bf16
    on CPUs without AVX512-BF16/AMX runs several times slower than fp32 and cannot be the limit)."""
    native = resolve_precision("auto", device_type) == "bf16-mixed"
    return ["fp32", "channels_last", *(["bf16"] if native else [])]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[int], None], warmup: int, steps: int, device: torch.device) -> float:
    """Seconds for `steps` calls of step(i) after `warmup` untimed ones, with the device's queue drained."""
    for i in range(warmup):
        step(i)
    _synchronize(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    _synchronize(device)
    return time.perf_counter() - start


def _endless(loader: Any, sampler: Any) -> Iterator[Any]:
    """Loader batches across as many epochs as asked for."""
    epoch = 0
    while True:
        sampler.set_position(epoch, 0)
        yield from loader
        epoch += 1


def _rate(cfg: DictConfig, steps: int, seconds: float) -> dict[str, float]:
    return {"images_per_s": steps * cfg.trainer.batch_size / seconds, "seconds": seconds, "steps": steps}


def measure_compute(cfg: DictConfig, variant: str, steps: int, warmup: int) -> dict[str, Any]:
    """Forward, backward (with accumulation) and optimizer step of the method on one pre-made batch."""
    from selfsup.data.pipeline import data_pipeline, device_views
    from selfsup.train.loop import measure_flops, training_model, training_optimizer

    precision, channels_last = VARIANTS[variant]
    fabric = make_fabric(accelerator=resolve_device(cfg.device), devices=1, precision=precision)
    tune_device(fabric.device.type)
    seed_everything(cfg.seed, verbose=False)
    accumulate = cfg.trainer.accumulate
    _, loader, _, augment = data_pipeline(cfg, fabric.device, 0, 1, cfg.trainer.batch_size // accumulate)
    views = device_views(next(iter(loader))[0], augment, fabric.device, channels_last)
    method = training_model(cfg, fabric.device.type, channels_last, sync_bn=False)
    flops_per_image = measure_flops(method, cfg)
    compile_backbones(method, cfg.trainer.compile)
    optimizer, _ = training_optimizer(method, cfg)
    total = warmup + steps
    model, optimizer = fabric.setup(method, optimizer)
    model.train()

    def step(i: int) -> None:
        schedule = Schedule(i, total, total)
        for micro in range(accumulate):
            with fabric.no_backward_sync(model, enabled=micro < accumulate - 1):
                fabric.backward(model(views, schedule=schedule)["loss"] / accumulate)
        method.drop_frozen_gradients(schedule)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        method.after_optimizer_step(i, total)

    result = _rate(cfg, steps, _timed(step, warmup, steps, fabric.device))
    if flops_per_image:
        result["tflops"] = flops_per_image * result["images_per_s"] / 1e12
    return result


def measure_loader(cfg: DictConfig, steps: int, warmup: int) -> dict[str, Any]:
    """The data path of the loop alone: loader batches turned into augmented views on the device."""
    from selfsup.data.pipeline import data_pipeline, device_views, views_channels_last

    device = torch.device(resolve_device(cfg.device))
    precision = resolve_precision(str(cfg.trainer.precision), device.type)
    accumulate = cfg.trainer.accumulate
    channels_last = views_channels_last(cfg, precision, device.type, processes=1)
    _, loader, sampler, augment = data_pipeline(cfg, device, 0, 1, cfg.trainer.batch_size // accumulate)
    batches = _endless(loader, sampler)

    def step(_: int) -> None:
        for _micro in range(accumulate):
            device_views(next(batches)[0], augment, device, channels_last)

    return _rate(cfg, steps, _timed(step, warmup, steps, device))


def measure_full(cfg: DictConfig, steps: int, warmup: int) -> dict[str, Any]:
    """`selfsup pretrain` in a scratch directory, timed by its own step log: one log record every `steps`
    steps (a log is the loop's one host sync, so logging every step would hide a GPU's asynchrony), and
    the rate of the last window, after at least `warmup` steps."""
    from selfsup.train.loop import pretrain

    total = (-(-warmup // steps) + 1) * steps  # warmup rounded up to whole windows, then the timed window
    with tempfile.TemporaryDirectory(prefix="selfsup-bench-") as scratch:
        run = OmegaConf.merge(
            cfg,
            {
                "output_dir": f"{scratch}/run",
                "trainer": {"epochs": total, "max_steps": total, "log_every": steps, "progress": False},
                "eval": {"every": 0, "val_loss_every": 0},
                "analysis": {"every": 0},
            },
        )
        pretrain(run)
        records = [json.loads(line) for line in (Path(scratch) / "run" / "metrics.jsonl").read_text().splitlines()]
    rate = [r["train/img_per_s"] for r in records if "train/img_per_s" in r][-1]
    return _rate(cfg, steps, steps * cfg.trainer.batch_size / rate)


MEASURES: dict[str, Callable[..., dict[str, Any]]] = {
    "compute": measure_compute,
    "loader": measure_loader,
    "full": measure_full,
}


def _child(conn: Any, cfg_yaml: str, stage: str, kwargs: dict[str, Any]) -> None:
    cfg = OmegaConf.create(cfg_yaml)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = MEASURES[stage](cfg, **kwargs)
        result["peak_memory_bytes"] = peak_memory_bytes(torch.device(resolve_device(cfg.device)))
        conn.send(("ok", result))
    except UserError as err:
        conn.send(("user", str(err)))
    except torch.cuda.OutOfMemoryError:
        conn.send(("oom", "out of GPU memory"))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it with the child's traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(cfg: DictConfig, stage: str, **kwargs: Any) -> dict[str, Any]:
    """One measurement in a fresh process (spawned: no CUDA state or peak memory carried over).
    Returns its result, or {"error": ...} when it ran out of memory."""
    what = " ".join([stage, *(str(v) for k, v in kwargs.items() if k == "variant")])
    print(f"selfsup bench: measuring {what} (batch {cfg.trainer.batch_size}) ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(send, OmegaConf.to_yaml(cfg, resolve=True), stage, kwargs))
    process.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:  # killed without a word: on CPU, the kernel's out-of-memory killer
        status, payload = "oom", "process killed (out of memory?)"
    process.join()
    print(f"selfsup bench: {what} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    if status == "user":
        raise UserError(payload)
    if status == "error":
        raise RuntimeError(f"selfsup bench: the {stage} measurement failed:\n{payload}")
    return payload if status == "ok" else {"error": payload}


def with_batch(cfg: DictConfig, batch: int) -> DictConfig:
    return OmegaConf.merge(cfg, {"trainer": {"batch_size": batch, "accumulate": 1}})


def largest_batch(cfg: DictConfig, variant: str, budget_bytes: int, verify: bool) -> dict[str, Any]:
    """The largest batch whose training step's peak memory fits `budget_bytes`, from a linear fit of peak
    memory against batch at PROBE_BATCHES (activations grow linearly with the batch). With `verify` the
    estimate is run and shrunk by 10% until it fits (cheap on a GPU, minutes per try on a CPU)."""
    peaks = {}
    for batch in PROBE_BATCHES:
        probe = run_isolated(with_batch(cfg, batch), "compute", variant=variant, steps=1, warmup=1)
        if "error" in probe:
            raise UserError(f"batch {batch} does not fit this device ({probe['error']}); lower backbone or crop size")
        peaks[batch] = probe["peak_memory_bytes"]
    (b1, p1), (b2, p2) = peaks.items()
    per_image = max((p2 - p1) / (b2 - b1), 1.0)
    fixed = p1 - per_image * b1
    estimate = int((budget_bytes - fixed) // per_image)
    fit = {"fixed_bytes": fixed, "bytes_per_image": per_image, "probes": {str(b): p for b, p in peaks.items()}}
    result: dict[str, Any] = {"budget_bytes": budget_bytes, "variant": variant, "fit": fit, "verified": False}
    while verify and estimate >= b1:
        trial = run_isolated(with_batch(cfg, estimate), "compute", variant=variant, steps=1, warmup=1)
        if "error" not in trial and trial["peak_memory_bytes"] <= budget_bytes:
            result.update(verified=True, peak_memory_bytes=trial["peak_memory_bytes"])
            break
        estimate = int(estimate * 0.9)
    return {**result, "largest_batch": max(estimate, 0)}


def bench(
    cfg: DictConfig,
    stages: list[str],
    variants: list[str] | None = None,
    steps: int = 3,
    warmup: int = 1,
    memory_budget_gb: float | None = None,
    peak_tflops: float | None = None,
) -> dict[str, Any]:
    """Measure the asked stages (see the module docstring) and their ratios; returns the JSON record."""
    device_type = resolve_device(cfg.device)
    variants = variants or default_variants(device_type)
    results: dict[str, Any] = {}
    if "compute" in stages:
        results["compute"] = {v: run_isolated(cfg, "compute", variant=v, steps=steps, warmup=warmup) for v in variants}
    for stage in ("loader", "full"):
        if stage in stages:
            results[stage] = run_isolated(cfg, stage, steps=steps, warmup=warmup)
    record: dict[str, Any] = {
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "data": cfg.data.name,
        "batch_size": cfg.trainer.batch_size,
        "crop_size": cfg.views.crop_size,
        "device": device_name(torch.device(device_type)),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "steps": steps,
        "warmup": warmup,
        "stages": results,
        "ratios": {},
    }
    compute = {v: r for v, r in results.get("compute", {}).items() if "error" not in r}
    if compute:
        best = max(compute, key=lambda v: compute[v]["images_per_s"])
        record["compute_limit"] = {"variant": best, "images_per_s": compute[best]["images_per_s"]}
        if peak_tflops and "tflops" in compute[best]:
            record["compute_limit"]["mfu"] = compute[best]["tflops"] / peak_tflops
        if "full" in results:
            record["ratios"]["full/compute"] = results["full"]["images_per_s"] / compute[best]["images_per_s"]
    if "full" in results and "loader" in results:
        record["ratios"]["loader/full"] = results["loader"]["images_per_s"] / results["full"]["images_per_s"]
    if memory_budget_gb:
        variant = record.get("compute_limit", {}).get("variant", variants[0])
        record["largest_batch"] = largest_batch(cfg, variant, int(memory_budget_gb * 2**30), device_type == "cuda")
    return record


def format_table(record: dict[str, Any]) -> str:
    """The record as a Markdown table plus its ratios, as printed by the CLI."""
    gib = 2**30
    rows = [(f"compute {v}", r) for v, r in record["stages"].get("compute", {}).items()]
    rows += [(stage, record["stages"][stage]) for stage in ("loader", "full") if stage in record["stages"]]
    lines = [
        f"selfsup bench: {record['method']} / {record['backbone']} on {record['data']}, batch {record['batch_size']}, "
        f"{record['crop_size']} px; {record['device']}; {record['steps']} timed steps after {record['warmup']}",
        "",
        "| stage | images/s | peak memory (GiB) |",
        "| --- | --- | --- |",
    ]
    for name, r in rows:
        rate = r["error"] if "error" in r else f"{r['images_per_s']:.1f}"
        memory = f"{r['peak_memory_bytes'] / gib:.2f}" if "peak_memory_bytes" in r else "-"
        lines.append(f"| {name} | {rate} | {memory} |")
    lines.append("")
    if "compute_limit" in record:
        limit = record["compute_limit"]
        mfu = f", model FLOPs utilisation {limit['mfu']:.1%}" if "mfu" in limit else ""
        lines.append(f"compute limit: {limit['images_per_s']:.1f} images/s ({limit['variant']}{mfu})")
    lines += [f"{name}: {value:.2f}" for name, value in record["ratios"].items()]
    if "largest_batch" in record:
        fit = record["largest_batch"]
        how = "verified" if fit["verified"] else f"estimated from batches {'/'.join(fit['fit']['probes'])}"
        per_image, fixed = fit["fit"]["bytes_per_image"] / 2**20, fit["fit"]["fixed_bytes"] / gib
        lines.append(
            f"largest batch within {fit['budget_bytes'] / gib:.1f} GiB: {fit['largest_batch']} ({how}; "
            f"{per_image:.1f} MiB per image + {fixed:.2f} GiB fixed)"
        )
    return "\n".join(lines) + "\n"


def save_record(record: dict[str, Any], out: Path) -> None:
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")


def default_out(cfg: DictConfig) -> Path:
    device_type = resolve_device(cfg.device)
    name = f"{cfg.method.name}-{cfg.backbone.name}-b{cfg.trainer.batch_size}-{device_type}.json"
    return Path("output") / "bench" / name


@dataclass(frozen=True)
class BenchSettings:
    """The command-level keys of `selfsup bench` (every other key=value is a pretraining override)."""

    stages: Annotated[Sequence[str], list_of(one_of(*STAGES))] = STAGES
    variants: Annotated[Sequence[str] | None, optional(list_of(one_of(*VARIANTS)))] = None  # None: the device's
    steps: PositiveInt = 3  # timed steps per measurement
    warmup: Count = 1  # untimed steps before them
    memory_budget_gb: Positive | None = None  # the largest batch that fits in this much device memory
    peak_tflops: Positive | None = None  # the device's peak, for model FLOPs utilisation
    out: Annotated[str | None, optional(TEXT)] = None  # the JSON record; default output/bench/<run>.json
