"""The report's tables: every run x checkpoint as CSV (for analysis elsewhere) and one summary row per run
(Markdown for the terminal and the README, the same cells as HTML in index.html)."""

from __future__ import annotations

import csv
import io

from selfsup.report.collect import METRICS, Checkpoint, Hours, Run, tasks_present

CSV_FIELDS = (
    "run",
    "method",
    "backbone",
    "dataset",
    "checkpoint",
    "epoch",
    "device_hours",
    "images_seen",
    "peak_memory_gb",
    "seconds_per_epoch",
)
MISSING = "–"


def metric_columns(runs: list[Run]) -> list[tuple[str, str]]:
    """(task, metric) of every table metric of the tasks the runs have results for."""
    return [(task, metric) for task in tasks_present(runs) for metric in METRICS[task]]


def csv_text(runs: list[Run]) -> str:
    """One row per run x checkpoint with every metric, unfinished results included and named in `partial`."""
    columns = metric_columns(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_FIELDS, *(f"{task}/{metric}" for task, metric in columns), "partial"])
    for run in runs:
        for c in run.checkpoints:
            metrics = [c.results[t].metrics.get(m, "") if t in c.results else "" for t, m in columns]
            partial = " ".join(task for task, result in c.results.items() if not result.complete)
            identity = [run.path, run.method, run.backbone, run.dataset, c.name, c.epoch]
            cost = [
                c.device_hours,
                c.images_seen,
                c.peak_memory_gb,
                "" if c.seconds_per_epoch is None else c.seconds_per_epoch,
            ]
            writer.writerow([*identity, *cost, *metrics, partial])
    return buffer.getvalue()


def compact(count: float) -> str:
    """12800000 -> '12.8M': counts of images read at a glance."""
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= divisor:
            return f"{count / divisor:.3g}{suffix}"
    return f"{count:g}"


def duration(seconds: float | None) -> str:
    """360 -> '6.0 min': a time per epoch read at a glance."""
    if seconds is None:
        return MISSING
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 90 * 60 else f"{seconds / 3600:.2f} h"


def _metric_cell(checkpoint: Checkpoint, task: str, metric: str) -> str:
    result = checkpoint.complete(task)
    return f"{result.metrics[metric]:.2f}" if result is not None and metric in result.metrics else MISSING


def summary_table(runs: list[Run], hours: Hours) -> tuple[list[str], list[list[str]]]:
    """(header, rows): each run at its newest checkpoint with finished results, cost first, then metrics."""
    columns = metric_columns(runs)
    header = [
        "run",
        "method",
        "backbone",
        "dataset",
        "checkpoint",
        "epochs",
        "device-hours",
        *([hours.name] if hours.scaled else []),
        "images seen",
        "peak memory",
        "time / epoch",
        *(f"{task} {metric}" for task, metric in columns),
    ]
    rows = []
    for run in runs:
        identity = [run.name, run.method, run.backbone, run.dataset]
        c = run.newest_with_results()
        if c is None:
            rows.append([*identity, *[MISSING] * (len(header) - len(identity))])
            continue
        scaled = [f"{hours.of(c):.3g}"] if hours.scaled else []
        memory = f"{c.peak_memory_gb:.2f} GB"
        cost = [f"{c.device_hours:.3g}", *scaled, compact(c.images_seen), memory, duration(c.seconds_per_epoch)]
        metrics = [_metric_cell(c, task, metric) for task, metric in columns]
        rows.append([*identity, c.name, f"{c.epoch}/{run.epochs}", *cost, *metrics])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |\n" for cells in lines)
