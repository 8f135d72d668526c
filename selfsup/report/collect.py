"""Read run directories for the report: what each run is (config.yaml), its evaluated checkpoints with their
training cost (eval/<checkpoint>/<task>.json) and its training-dynamics records (metrics.jsonl)."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from selfsup.config import load_run_config
from selfsup.errors import UserError
from selfsup.report.devices import ReferenceGpu, device_gpu

# task -> the metrics the tables show; the first is the headline metric that the plots show
METRICS: dict[str, tuple[str, ...]] = {
    "knn": ("top1",),
    "linear": ("top1",),
    "finetune": ("top1",),
    "detection": ("map_50", "map"),
    "segmentation": ("miou",),
}
X_AXES = ("device-hours", "images-seen")
# metrics.jsonl measures drawn against the training step: training dynamics, and the online monitors (kNN,
# linear probe) scored during pretraining
CURVE_PREFIXES = ("dynamics/", "monitor/")


@dataclass(frozen=True)
class Hours:
    """How the report shows compute: device-hours, device-hours x scale under another name (P40 hours), or
    each run's device-hours converted to a reference GPU's by the devices' peak rates (`hours_ref=p40`), so that
    runs on different hardware compare on one axis."""

    scale: float = 1.0
    label: str | None = None
    reference: ReferenceGpu | None = None

    @property
    def scaled(self) -> bool:
        return self.scale != 1.0 or self.label is not None or self.reference is not None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.reference is not None:
            return f"{self.reference.name}-hours"
        return "scaled hours" if self.scaled else "device-hours"

    @property
    def axis_label(self) -> str:
        if self.reference is not None:
            ref = self.reference
            return f"{self.name} (device-hours x peak TFLOP/s / the {ref.name}'s {ref.tflops:g} {ref.precision})"
        return f"{self.name} (device-hours x {self.scale:g})" if self.scaled else "device-hours"

    def of(self, checkpoint: Checkpoint) -> float:
        """The checkpoint's training cost on this axis."""
        hours = checkpoint.device_hours
        if self.reference is None or hours == 0:
            return hours * self.scale
        device = str(checkpoint.cost.get("device_name", ""))
        gpu = device_gpu(device)
        if gpu is None:
            raise UserError(
                f"hours_ref={self.reference.key}: checkpoint {checkpoint.name} was trained on "
                f"{device or 'an unrecorded device'}, which has no peak rate in the table (selfsup.report.devices); "
                "give the ratio yourself with hours_scale= instead"
            )
        return hours * gpu.tflops / self.reference.tflops


@dataclass
class Result:
    metrics: dict[str, float]
    complete: bool


@dataclass
class Checkpoint:
    """One evaluated checkpoint file: its training cost and its results by task."""

    name: str
    epoch: int
    step: int
    cost: dict[str, Any]
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def device_hours(self) -> float:
        return float(self.cost.get("device_hours", self.cost.get("device_seconds", 0.0) / 3600))

    @property
    def images_seen(self) -> int:
        return int(self.cost.get("images_seen", 0))

    @property
    def peak_memory_gb(self) -> float:
        return self.cost.get("peak_memory_bytes", 0) / 1e9

    @property
    def seconds_per_epoch(self) -> float | None:
        """Wall seconds per epoch up to this checkpoint (device-seconds over the devices that shared them);
        None at the starting point."""
        if self.epoch <= 0:
            return None
        seconds = float(self.cost.get("device_seconds", self.device_hours * 3600))
        return seconds / max(int(self.cost.get("devices", 1)), 1) / self.epoch

    def complete(self, task: str) -> Result | None:
        """The task's result when it is finished (partial results are not plotted)."""
        result = self.results.get(task)
        return result if result is not None and result.complete else None


@dataclass
class Run:
    path: Path
    name: str  # unique among the report's runs: names its files
    method: str
    backbone: str
    dataset: str
    epochs: int
    test_split: str
    checkpoints: list[Checkpoint]  # in training order
    dynamics: list[dict[str, Any]]  # metrics.jsonl records holding dynamics/* or monitor/* (online kNN, linear) values
    label: str = ""  # legend text, unique among the report's runs
    predictor: str = ""  # method.predictor.type ("" without one): pairs runs for the symmetry comparison
    symmetry_reg: float = 0.0  # method.predictor.symmetry_reg: the study's Fig. 2 compares with and without

    @property
    def identity(self) -> str:
        return f"{self.method} / {self.backbone} / {self.dataset}"

    def newest_with_results(self) -> Checkpoint | None:
        """The newest checkpoint with at least one finished result: the run's row in the summary table."""
        done = [c for c in self.checkpoints if any(r.complete for r in c.results.values())]
        return done[-1] if done else None


def read_json(path: Path) -> Any:
    """A JSON file, or None while it is unreadable (being written, or not JSON)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete records of a JSON-lines file; a line a running process is still appending is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_results(run_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(checkpoint directory name, result) of every readable `eval/<checkpoint>/<task>.json` of a known task."""
    results = []
    for path in sorted((run_dir / "eval").glob("*/*.json")):
        record = read_json(path)
        if isinstance(record, dict) and record.get("task") in METRICS and isinstance(record.get("metrics"), dict):
            results.append((path.parent.name, record))
    return results


def group_checkpoints(results: list[tuple[str, dict[str, Any]]]) -> list[Checkpoint]:
    """One entry per checkpoint file (SHA-256), so `last` evaluated both as `last` and as `epoch-0100` is one
    point, named by its epoch; `last` evaluated at different times (it moves as training goes on) is several."""
    by_file: dict[str, Checkpoint] = {}
    for name, record in sorted(results, key=lambda item: item[0] == "last"):
        ckpt = record.get("checkpoint", {})
        point = by_file.setdefault(
            ckpt.get("sha256") or name,
            Checkpoint(name, int(ckpt.get("epoch", 0)), int(ckpt.get("step", 0)), record.get("cost", {})),
        )
        metrics = {k: float(v) for k, v in record["metrics"].items() if isinstance(v, (int, float))}
        point.results.setdefault(record["task"], Result(metrics, bool(record.get("complete", True))))
    return sorted(by_file.values(), key=lambda c: (c.step, c.name))


def load_run(path: Path, name: str) -> Run:
    """A run directory with at least one evaluation result; a UserError names the fix otherwise."""
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist; pass runs=[DIR,...], output_dirs of `selfsup pretrain`")
    cfg = load_run_config(path)
    checkpoints = group_checkpoints(read_results(path))
    if not checkpoints:
        raise UserError(f"{path} has no evaluation results yet: run `selfsup sweep run={path}` first")
    return Run(
        path=path,
        name=name,
        method=str(cfg.method.name),
        backbone=str(cfg.backbone.name),
        dataset=str(cfg.data.name),
        epochs=int(cfg.trainer.epochs),
        test_split=str(cfg.data.test_split),
        checkpoints=checkpoints,
        dynamics=[r for r in read_jsonl(path / "metrics.jsonl") if any(k.startswith(CURVE_PREFIXES) for k in r)],
        predictor=str(OmegaConf.select(cfg, "method.predictor.type", default="")),
        symmetry_reg=float(OmegaConf.select(cfg, "method.predictor.symmetry_reg", default=0.0)),
    )


def unique_names(paths: list[Path]) -> list[str]:
    """File-safe directory names, numbered where two runs share one (output/a/run, output/b/run)."""
    names = [re.sub(r"[^A-Za-z0-9._-]+", "_", p.resolve().name) for p in paths]
    counts = Counter(names)
    return [f"{n}-{i + 1}" if counts[n] > 1 else n for i, n in enumerate(names)]


def load_runs(paths: list[Path]) -> list[Run]:
    """The report's runs, labelled `method / backbone / dataset`, plus the run's name where labels collide."""
    if not paths:
        raise UserError("no runs given: selfsup report runs=[output/a,output/b]")
    resolved = [p.resolve() for p in paths]
    twice = [p for p, r in zip(paths, resolved, strict=True) if resolved.count(r) > 1]
    if twice:
        raise UserError(f"run {twice[0]} is listed twice in runs=; list each run directory once")
    runs = [load_run(Path(p), n) for p, n in zip(paths, unique_names(paths), strict=True)]
    counts = Counter(run.identity for run in runs)
    for run in runs:
        run.label = run.identity if counts[run.identity] == 1 else f"{run.identity} ({run.name})"
    return runs


def tasks_present(runs: list[Run]) -> list[str]:
    """Tasks with a result (finished or not) in any run, in the order of METRICS."""
    found = {task for run in runs for c in run.checkpoints for task in c.results}
    return [task for task in METRICS if task in found]


def x_value(checkpoint: Checkpoint, axis: str, hours: Hours = Hours()) -> float:
    """The cost of reaching a checkpoint: its hours on the report's axis, or images seen."""
    return hours.of(checkpoint) if axis == "device-hours" else float(checkpoint.images_seen)


def accuracy_series(
    runs: list[Run], task: str, axis: str, hours: Hours = Hours()
) -> dict[str, tuple[list[float], list[float]]]:
    """The plotted points: per run label, (cost, headline metric) of each checkpoint with a finished result."""
    metric = METRICS[task][0]
    series = {}
    for run in runs:
        xs, ys = [], []
        for checkpoint in run.checkpoints:
            result = checkpoint.complete(task)
            if result is not None and metric in result.metrics:
                xs.append(x_value(checkpoint, axis, hours))
                ys.append(result.metrics[metric])
        if xs:
            series[run.label] = (xs, ys)
    return series


def dynamics_keys(runs: list[Run]) -> list[str]:
    """The scalar dynamics/* and monitor/* measures recorded by any run, in the order first seen."""
    keys: dict[str, None] = {}
    for run in runs:
        for record in run.dynamics:
            keys.update(
                (k, None)
                for k, v in record.items()
                if k.startswith(CURVE_PREFIXES) and isinstance(v, (int, float)) and not isinstance(v, bool)
            )
    return list(keys)


def dynamics_series(runs: list[Run], key: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per run label, (step, value) of every record holding the scalar `key`."""
    series = {}
    for run in runs:
        records = [r for r in run.dynamics if isinstance(r.get(key), (int, float)) and "step" in r]
        if records:
            series[run.label] = ([float(r["step"]) for r in records], [float(r[key]) for r in records])
    return series


def last_spectrum(run: Run, key: str) -> tuple[int, list[float]] | None:
    """(step, eigenvalues) of the run's last record holding the spectrum `key`, or None without one."""
    records = [r for r in run.dynamics if isinstance(r.get(key), list) and r[key]]
    return (int(records[-1].get("step", 0)), [float(v) for v in records[-1][key]]) if records else None


def spectrum_trajectories(run: Run, key: str) -> tuple[list[int], list[list[float]]]:
    """(steps, values) of every record holding the list `key`: values[i][j] is the j-th entry (eigenvalue,
    eigenvector cosine) at steps[i]; records of another length than the last (a resized head) are left out."""
    records = [r for r in run.dynamics if isinstance(r.get(key), list) and r[key] and "step" in r]
    if not records:
        return [], []
    width = len(records[-1][key])
    kept = [r for r in records if len(r[key]) == width]
    return [int(r["step"]) for r in kept], [[float(v) for v in r[key]] for r in kept]


def symmetry_pairs(runs: list[Run]) -> list[tuple[Run, Run]]:
    """(without, with) symmetry regularisation: each regularised run and the first run of the same method,
    backbone, dataset and predictor type without it, as the study's Fig. 2 sets them side by side."""
    pairs = []
    for reg in (r for r in runs if r.symmetry_reg > 0):
        plain = [r for r in runs if r.symmetry_reg == 0 and (r.identity, r.predictor) == (reg.identity, reg.predictor)]
        if plain:
            pairs.append((plain[0], reg))
    return pairs


def device_names(runs: list[Run]) -> list[str]:
    """The pretraining devices named in the checkpoints' cost records."""
    names = {c.cost.get("device_name") for run in runs for c in run.checkpoints}
    return sorted(n for n in names if n)
