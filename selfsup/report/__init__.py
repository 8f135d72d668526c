"""`selfsup report runs=[...]`: accuracy against compute across runs, as plots, tables and one HTML page.

Reads what `selfsup pretrain` and `selfsup sweep` leave in each run directory (config.yaml, metrics.jsonl,
eval/<checkpoint>/<task>.json) and never changes it, except that `embedding=true` may run a kNN evaluation
to cache the test features it maps.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from selfsup.errors import UserError, require_extra
from selfsup.registry import close_matches_hint
from selfsup.report.collect import X_AXES, Hours, load_runs
from selfsup.report.devices import reference_gpu
from selfsup.report.page import render_page
from selfsup.report.plots import accuracy_plots, dynamics_plots
from selfsup.report.tables import csv_text, markdown_table, summary_table
from selfsup.runs.files import atomic_write_text, make_dir
from selfsup.runs.outputs import BOOLEANS, enclosing_run, overwrite_option, refuse_existing, require_directory

OPTIONS = ("runs", "out", "hours_scale", "hours_label", "hours_ref", "embedding", "checkpoint", "overwrite")
# What a report writes into out/: its tables and page, and plots (.png and .svg) named by these patterns.
TABLES = ("results.csv", "results.md", "index.html")
PLOT_STEMS = (*(f"*-vs-{axis}" for axis in X_AXES), "dynamics-*", "monitor-*", "embedding-*")


@dataclass
class Report:
    out: Path
    files: list[Path]  # everything written
    markdown: str  # the summary table

    @property
    def index(self) -> Path:
        return self.out / "index.html"


def parse_options(keys: dict[str, str], rest: list[str]) -> dict[str, Any]:
    """`selfsup report` key=value options (all but runs=) as build_report's keyword arguments."""
    if rest:
        key = rest[0].split("=", 1)[0]
        raise UserError(
            f"unknown report option {rest[0]!r}{close_matches_hint(key, list(OPTIONS))} (options: {', '.join(OPTIONS)})"
        )
    options: dict[str, Any] = {"out": keys.get("out", "report")}
    if "hours_scale" in keys:
        try:
            options["hours_scale"] = float(keys["hours_scale"])
        except ValueError:
            raise UserError(f"hours_scale={keys['hours_scale']} is not a number; e.g. hours_scale=2.5") from None
    if "hours_label" in keys:
        options["hours_label"] = keys["hours_label"].strip("\"'")
    if "hours_ref" in keys:
        options["hours_ref"] = keys["hours_ref"]
    if "embedding" in keys:
        if keys["embedding"].lower() not in BOOLEANS:
            raise UserError(f"embedding={keys['embedding']} is not a boolean; use embedding=true or embedding=false")
        options["embedding"] = BOOLEANS[keys["embedding"].lower()]
    if "checkpoint" in keys:
        options["checkpoint"] = keys["checkpoint"]
    options["overwrite"] = overwrite_option(keys)
    return options


def earlier_report(out: Path) -> list[Path]:
    """The files of a report already in `out` (tables, page, plots by name): what a new one would replace."""
    names = [p.name for p in out.iterdir()] if out.is_dir() else []
    patterns = (*TABLES, *(f"{stem}.{ext}" for stem in PLOT_STEMS for ext in ("png", "svg")))
    return [out / name for name in sorted(names) if any(fnmatchcase(name, pattern) for pattern in patterns)]


def check_out(out: Path, overwrite: bool) -> None:
    """Where a report may go: a directory (new or existing) outside every run directory, holding no earlier
    report unless overwrite=true."""
    require_directory(out)
    run = enclosing_run(out)
    if run is not None:
        raise UserError(f"out={out} is inside the run directory {run}; write the report elsewhere (out=report/)")
    refuse_existing(earlier_report(out), overwrite)


def check_options(
    out: Path,
    overwrite: bool,
    hours_scale: float = 1.0,
    hours_label: str | None = None,
    hours_ref: str | None = None,
    embedding: bool = False,
) -> Hours:
    """Check build_report's options before any work (a study checks its report's before its first run);
    returns the hours axis they set."""
    number = isinstance(hours_scale, (int, float)) and not isinstance(hours_scale, bool)
    if not (number and math.isfinite(hours_scale) and hours_scale > 0):
        raise UserError(f"hours_scale={hours_scale} must be a positive number (device-hours are multiplied by it)")
    if hours_ref is not None and hours_scale != 1.0:
        raise UserError("hours_ref and hours_scale both set the hours axis: give one of them")
    reference = reference_gpu(str(hours_ref)) if hours_ref is not None else None
    if embedding:
        require_extra("sklearn", "embedding", "embedding=true (t-SNE maps)")
    check_out(out, overwrite)
    return Hours(hours_scale, hours_label, reference)


def build_report(
    runs: list[Path],
    out: Path | str = "report",
    hours_scale: float = 1.0,
    hours_label: str | None = None,
    hours_ref: str | None = None,
    embedding: bool = False,
    checkpoint: str = "last",
    overwrite: bool = False,
) -> Report:
    """Write the plots (PNG + SVG), results.csv, results.md and index.html for `runs` into `out`; an earlier
    report there is replaced only with `overwrite`. `hours_ref` (a key of selfsup.report.devices) converts each
    run's device-hours to that GPU's; `hours_scale` multiplies them instead."""
    out = Path(out)
    hours = check_options(out, overwrite, hours_scale, hours_label, hours_ref, embedding)
    loaded = load_runs([Path(p) for p in runs])
    for saved in (c for run in loaded for c in run.checkpoints):
        hours.of(saved)  # a device without a rate fails here, before anything is written
    make_dir(out)
    accuracy = accuracy_plots(loaded, out, hours)
    dynamics = dynamics_plots(loaded, out)
    embeddings = []
    if embedding:
        from selfsup.report.embedding import embedding_plot  # imports the evaluation code and scikit-learn

        embeddings = [embedding_plot(run, checkpoint, out) for run in loaded]
    table = summary_table(loaded, hours)
    markdown = markdown_table(*table)
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    texts = {
        "results.csv": csv_text(loaded),
        "results.md": markdown,
        "index.html": render_page(loaded, date, table, accuracy, dynamics, embeddings),
    }
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    plots = [out / f"{plot.name}.{ext}" for plot in accuracy + dynamics + embeddings for ext in ("png", "svg")]
    return Report(out, [*plots, *(out / name for name in texts)], markdown)
