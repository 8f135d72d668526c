"""The report's figures, drawn on matplotlib's Agg canvas without pyplot: no display is needed and no global
figure state outlives a report. Each figure is written as PNG (embedded in index.html) and SVG."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator

from selfsup.report.collect import (
    METRICS,
    X_AXES,
    Hours,
    Run,
    accuracy_series,
    dynamics_keys,
    dynamics_series,
    last_spectrum,
    spectrum_trajectories,
    symmetry_pairs,
    tasks_present,
)

Series = dict[str, tuple[list[float], list[float]]]
SPECTRA = {
    "dynamics/predictor_eigenvalues": "predictor Wp (symmetric part)",
    "dynamics/correlation_eigenvalues": "feature correlation F",
}


@dataclass
class Plot:
    name: str  # file stem in the report directory
    caption: str
    png: bytes


def new_figure(columns: int = 1, width: float = 9.0, height: float = 4.5) -> tuple[Figure, list[Axes]]:
    """A figure on an Agg canvas whose layout makes room for a legend outside the axes."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, columns, squeeze=False)[0])


def save(fig: Figure, out: Path, name: str, caption: str) -> Plot:
    """Write <name>.png and <name>.svg (no timestamps, so reruns give the same files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    (out / f"{name}.png").write_bytes(buffer.getvalue())
    fig.set_layout_engine("none")  # keep the layout just computed: laying out again costs a third of the time
    fig.savefig(out / f"{name}.svg", format="svg", metadata={"Date": None})
    return Plot(name, caption, buffer.getvalue())


def run_colors(runs: list[Run]) -> dict[str, str]:
    """One colour per run, the same in every figure."""
    return {run.label: f"C{i}" for i, run in enumerate(runs)}


def draw_lines(ax: Axes, series: Series, colors: dict[str, str], marker: str) -> None:
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker=marker, markersize=4, linewidth=1.5, color=colors[label], label=label)
    ax.grid(True, alpha=0.3)


def add_legend(fig: Figure) -> None:
    """One legend right of the axes, each label once (figures with two panels repeat the runs)."""
    handles = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize="small")


def line_figure(series: Series, colors: dict[str, str], title: str, xlabel: str, ylabel: str, marker: str) -> Figure:
    fig, (ax,) = new_figure()
    draw_lines(ax, series, colors, marker)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    add_legend(fig)
    return fig


def accuracy_title(task: str, axis: str, hours: Hours) -> str:
    return f"{task} {METRICS[task][0]} vs {hours.name if axis == 'device-hours' else 'images seen'}"


def accuracy_figure(runs: list[Run], task: str, axis: str, hours: Hours) -> Figure | None:
    """The headline metric of `task` against compute, one marker per checkpoint; None without finished results."""
    series = accuracy_series(runs, task, axis, hours)
    if not series:
        return None
    metric = METRICS[task][0]
    xlabel = hours.axis_label if axis == "device-hours" else "images seen (source images, all devices)"
    fig = line_figure(series, run_colors(runs), accuracy_title(task, axis, hours), xlabel, f"{task} {metric} (%)", "o")
    ax = fig.axes[0]
    if axis == "images-seen":
        ax.xaxis.set_major_formatter(EngFormatter())
    elif hours.scaled:
        ax.text(
            0.99,
            0.02,
            f"x axis: {hours.axis_label}",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize="small",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"},
        )
    return fig


def accuracy_plots(runs: list[Run], out: Path, hours: Hours) -> list[Plot]:
    """`<task>-vs-device-hours` and `<task>-vs-images-seen` for every task with finished results."""
    plots = []
    for task in tasks_present(runs):
        for axis in X_AXES:
            fig = accuracy_figure(runs, task, axis, hours)
            if fig is not None:
                plots.append(save(fig, out, f"{task}-vs-{axis}", accuracy_title(task, axis, hours)))
    return plots


def spectra_figure(runs: list[Run]) -> Figure | None:
    """The eigenvalues of the predictor and of F at each predictor run's last record, by magnitude on a log
    scale (the predictor's symmetric part can have negative eigenvalues); None without predictor runs."""
    fig, axes = new_figure(columns=len(SPECTRA), width=11.0)
    found = False
    for ax, (key, title) in zip(axes, SPECTRA.items(), strict=True):
        colors, series = {}, {}
        for run, color in zip(runs, run_colors(runs).values(), strict=True):
            spectrum = last_spectrum(run, key)
            if spectrum is not None:
                label = f"{run.label} (step {spectrum[0]})"
                colors[label] = color
                series[label] = (list(range(1, len(spectrum[1]) + 1)), [abs(v) for v in spectrum[1]])
        found = found or bool(series)
        draw_lines(ax, series, colors, ".")
        ax.set(title=title, xlabel="eigenvalue index (descending)", ylabel="|eigenvalue| (log scale)", yscale="log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not found:
        return None
    add_legend(fig)
    return fig


TRAJECTORIES = {  # key: panel title, y label, log scale of |value|
    "dynamics/correlation_eigenvalues": ("eigenvalues of F", "|eigenvalue| (log scale)", True),
    "dynamics/predictor_eigenvalues": ("eigenvalues of Wp (symmetric part)", "eigenvalue", False),
    "dynamics/eigenvector_cosines": ("alignment of each eigenvector of F", "|cos(Wp u_j, u_j)|", False),
}


def draw_trajectories(axes: list[Axes], run: Run, prefix: str = "") -> bool:
    """One run's trajectories in one panel per TRAJECTORIES key (titles after `prefix`); False without any."""
    found = False
    for ax, (key, (title, ylabel, log)) in zip(axes, TRAJECTORIES.items(), strict=True):
        steps, values = spectrum_trajectories(run, key)
        if steps:
            found = True
            width = len(values[0])
            colormap = matplotlib.colormaps["viridis"]
            for j in range(width):
                column = [abs(row[j]) if log else row[j] for row in values]
                ax.plot(steps, column, linewidth=0.6, alpha=0.8, color=colormap(j / max(width - 1, 1)))
        ax.set(title=f"{prefix}{title}", xlabel="training step", ylabel=ylabel)
        ax.set_yscale("log" if log and steps else "linear")
        ax.grid(True, alpha=0.3)
    return found


def trajectories_figure(run: Run) -> Figure | None:
    """For one predictor run: every eigenvalue of F and of Wp, and each eigenvector's alignment, against the
    training step (one line per index, coloured from the largest eigenvalue of F to the smallest); None
    without predictor records."""
    fig, axes = new_figure(columns=len(TRAJECTORIES), width=13.0, height=4.2)
    if not draw_trajectories(axes, run):
        return None
    fig.suptitle(f"{run.label}: predictor and F over training (colour: eigenvalue index of F, largest = dark)")
    return fig


def symmetry_figure(plain: Run, regularised: Run) -> Figure | None:
    """The study's Fig. 2: the same trajectories without (top row) and with (bottom row) symmetry
    regularisation, each column on one y scale so the two read against each other; None unless both have
    records."""
    fig = Figure(figsize=(13.0, 7.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(2, len(TRAJECTORIES), sharex=True, sharey="col", squeeze=False)
    rows = [(plain, "without: "), (regularised, f"λ {regularised.symmetry_reg:g}: ")]
    if not all([draw_trajectories(list(axes), run, prefix) for axes, (run, prefix) in zip(grid, rows, strict=True)]):
        return None
    fig.suptitle(
        f"symmetry regularisation: {plain.label} (top) against {regularised.label} (bottom, "
        f"λ ||Wp - Wp^T||², λ = {regularised.symmetry_reg:g}); colour: eigenvalue index of F, largest = dark"
    )
    return fig


def dynamics_plots(runs: list[Run], out: Path) -> list[Plot]:
    """`dynamics-<measure>` per scalar dynamics/* measure, `monitor-<measure>` per online monitor (kNN and
    linear-probe accuracy during pretraining), `dynamics-trajectories-<run>` per predictor run,
    `dynamics-symmetry-<run>` per run with symmetry regularisation and its plain twin (symmetry_pairs), and
    `dynamics-spectra` for predictor runs."""
    plots = []
    for key in dynamics_keys(runs):
        prefix, measure = key.split("/", 1)
        words = measure.replace("_", " ")
        if prefix == "monitor":  # knn_top1 -> online kNN top1
            words = f"online {words.replace('knn', 'kNN')}"
        fig = line_figure(
            dynamics_series(runs, key), run_colors(runs), f"{words} during pretraining", "training step", words, "."
        )
        plots.append(save(fig, out, f"{prefix}-{measure}", f"{words} against training step"))
    for run in runs:
        fig = trajectories_figure(run)
        if fig is not None:
            caption = f"{run.label}: each eigenvalue of F and of the predictor, and each eigenvector's alignment"
            plots.append(save(fig, out, f"dynamics-trajectories-{run.name}", caption))
    for plain, regularised in symmetry_pairs(runs):
        fig = symmetry_figure(plain, regularised)
        if fig is not None:
            caption = f"{plain.label} against {regularised.label}: without and with symmetry regularisation"
            plots.append(save(fig, out, f"dynamics-symmetry-{regularised.name}", caption))
    fig = spectra_figure(runs)
    if fig is not None:
        plots.append(save(fig, out, "dynamics-spectra", "eigenvalue spectra of the predictor and of F, last record"))
    return plots
