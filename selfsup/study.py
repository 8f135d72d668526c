"""`selfsup study NAME`: a published study as one command: its pretraining runs, the sweep of every
checkpoint on its downstream tasks, and its report.

A study is a plain YAML file (the shipped ones are in selfsup/conf/study/; copy one and pass its path to
change it):

    description: one line on what the study measures
    runs:                      # one pretraining run per entry, in <out>/<name>
      simclr: [method=simclr, data=cifar10, trainer.epochs=1000]
    sweep:
      tasks: [linear]          # evaluated on every checkpoint of every run
      checkpoints: [last]      # optional: only these checkpoints (default: all)
      overrides: []            # evaluation settings (eval.*)
    report: {hours_scale: 1.0, hours_label: null, hours_ref: null, embedding: false}
    data_names: {imagenet100: imagenet100_scan}   # optional: what data=NAME on the command line means in
                               # this study, where its source's name is another data= preset
    smoke:                     # smoke=true: the same pipeline in minutes on a CPU
      runs: [data=synthetic, trainer.epochs=2]     # added to every run
      per_run: {simclr: []}    # optional: added to one run
      only: [simclr]           # optional: the runs the smoke version keeps
      tasks: [knn]             # optional: replaces sweep.tasks
      sweep: []                # added to sweep.overrides
      data: [voc_segmentation] # optional: tiny datasets in these on-disk formats, written to
                               # <out>/smoke-data, which overrides name as {smoke_data}

Every stage resumes: rerunning the command continues interrupted runs and skips finished evaluations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from selfsup.errors import UserError
from selfsup.registry import close_matches_hint

STUDY_DIR = Path(__file__).parent / "conf" / "study"
SECTIONS = {"description", "runs", "sweep", "report", "smoke", "data_names"}
SMOKE_KEYS = {"runs", "per_run", "only", "tasks", "sweep", "data"}
REPORT_KEYS = {"hours_scale", "hours_label", "hours_ref", "embedding"}


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


@dataclass
class Study:
    """A study file, resolved for one mode (full or smoke)."""

    name: str
    description: str
    runs: dict[str, list[str]]  # run name -> pretraining overrides
    tasks: list[str]
    checkpoints: list[str] | None  # None: every checkpoint
    sweep_overrides: list[str]
    report: dict[str, Any]
    sample_data: list[str] = field(default_factory=list)  # format_samples writers the smoke version needs
    data_names: dict[str, str] = field(default_factory=dict)  # data=NAME given -> the data= preset it means here

    def run_args(self, run: str, out: Path, extra: list[str]) -> list[str]:
        """The run's overrides, then `extra` with data=NAME as this study means it (two published lists share
        a name: the SimCLR toolbox's ImageNet-100 is SCAN's), then its output directory."""
        named = [f"data={self.data_names.get(a[5:], a[5:])}" if a.startswith("data=") else a for a in extra]
        return [*self.runs[run], *named, f"output_dir={out / run}"]


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, ListConfig)) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a list of key=value strings")
    return [str(v) for v in value]


def _check_keys(section: DictConfig | dict, known: set[str], where: str) -> None:
    for key in section:
        if key not in known:
            raise UserError(f"unknown key {where}{key}{close_matches_hint(str(key), sorted(known))} in the study file")


def load_study(name_or_path: str, smoke: bool = False) -> Study:
    """A shipped study by name, or a study file by path; `smoke` applies its smoke section."""
    path = Path(name_or_path)
    if not path.suffix:
        path = STUDY_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            names = study_names()
            raise UserError(
                f"unknown study {name_or_path!r}{close_matches_hint(name_or_path, names)} "
                f"(studies: {', '.join(names)}; or give the path of a study .yaml file)"
            )
    if not path.is_file():
        raise UserError(f"no study file {path}")
    spec = OmegaConf.load(path)
    if not isinstance(spec, DictConfig) or "runs" not in spec or not spec.runs:
        raise UserError(f"{path} is not a study file: it needs a `runs:` mapping of run names to overrides")
    _check_keys(spec, SECTIONS, "")
    sweep = spec.get("sweep") or {}
    _check_keys(sweep, {"tasks", "checkpoints", "overrides"}, "sweep.")
    report = dict(spec.get("report") or {})
    _check_keys(report, REPORT_KEYS, "report.")
    smoke_spec = spec.get("smoke") or {}
    _check_keys(smoke_spec, SMOKE_KEYS, "smoke.")
    study = Study(
        name=path.stem,
        description=str(spec.get("description", "")),
        runs={str(name): _strings(overrides, f"runs.{name}") for name, overrides in spec.runs.items()},
        tasks=_strings(sweep.get("tasks"), "sweep.tasks"),
        checkpoints=_strings(sweep.get("checkpoints"), "sweep.checkpoints") or None,
        sweep_overrides=_strings(sweep.get("overrides"), "sweep.overrides"),
        report=report,
        data_names=_data_names(spec.get("data_names") or {}),
    )
    return with_smoke(study, smoke_spec) if smoke else study


def _data_names(section: DictConfig | dict) -> dict[str, str]:
    names = {str(k): v for k, v in section.items()}
    if not all(isinstance(v, str) for v in names.values()):
        raise UserError("data_names must map each data= name to the data= preset it means in the study")
    return names


def _names_among(names: list[str], known: list[str], where: str, what: str) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        hint = close_matches_hint(unknown[0], known)
        raise UserError(f"{where} names {unknown[0]!r}{hint}, which is not one of the {what} ({', '.join(known)})")
    return names


def with_smoke(study: Study, smoke: DictConfig | dict) -> Study:
    """The study as its smoke section changes it: fewer runs, settings added to each, other tasks."""
    runs = list(study.runs)
    only = _names_among(_strings(smoke.get("only"), "smoke.only") or runs, runs, "smoke.only", "runs")
    per_run = smoke.get("per_run") or {}
    _names_among([str(r) for r in per_run], runs, "smoke.per_run", "runs")
    added = _strings(smoke.get("runs"), "smoke.runs")
    formats = _strings(smoke.get("data"), "smoke.data")
    return replace(
        study,
        runs={r: [*study.runs[r], *added, *_strings(per_run.get(r), f"smoke.per_run.{r}")] for r in only},
        tasks=_strings(smoke.get("tasks"), "smoke.tasks") or study.tasks,
        sweep_overrides=[*study.sweep_overrides, *_strings(smoke.get("sweep"), "smoke.sweep")],
        sample_data=_names_among(formats, list(SAMPLE_WRITERS), "smoke.data", "formats"),
    )


def with_only(study: Study, names: list[str]) -> Study:
    """The study cut to the named runs (`only=[a,b]`): rerun or change one arm without the others."""
    if not names:
        runs = list(study.runs)
        raise UserError(f"only= names no run; give some of {', '.join(runs)}, e.g. only=[{runs[0]}]")
    keep = set(_names_among(names, list(study.runs), "only=", "runs"))
    return replace(study, runs={r: args for r, args in study.runs.items() if r in keep})


# smoke.data names -> their writers in selfsup.data.format_samples (imported only when used)
SAMPLE_WRITERS = {"voc_segmentation": "write_voc_segmentation", "voc_detection": "write_voc_detection"}


def with_sample_root(study: Study, root: Path) -> Study:
    """The study with `root` wherever its overrides say {smoke_data}."""

    def fill(args: list[str]) -> list[str]:
        return [a.replace("{smoke_data}", str(root)) for a in args]

    return replace(
        study, runs={run: fill(args) for run, args in study.runs.items()}, sweep_overrides=fill(study.sweep_overrides)
    )


def write_sample_data(names: list[str], root: Path) -> None:
    """The tiny datasets a smoke version trains on, each written once under `root`."""
    from selfsup.data import format_samples

    for name in names:
        done = root / f".{name}-written"
        if not done.exists():
            getattr(format_samples, SAMPLE_WRITERS[name])(root)
            done.touch()


def run_study(
    study: Study,
    out: Path,
    extra: list[str],
    say: Callable[[str], None] = print,
    on_row: Callable[[Any], None] | None = None,
) -> Any:
    """Pretrain every run (with `extra` overrides), sweep every checkpoint (`on_row` sees each result) and
    build the report in <out>/report; returns the Report."""
    from selfsup.eval.settings import pretraining_config
    from selfsup.eval.sweep import sweep
    from selfsup.report import build_report, check_options
    from selfsup.train.loop import pretrain

    study = with_sample_root(study, out / "smoke-data")
    configs = {run: pretraining_config(study.run_args(run, out, extra)) for run in study.runs}  # every typo, first
    check_options(out / "report", True, **study.report)
    say(f"study {study.name}: {study.description}")
    write_sample_data(study.sample_data, out / "smoke-data")
    for run, cfg in configs.items():
        say(f"[{study.name}] pretrain {run}: selfsup pretrain {' '.join(study.run_args(run, out, extra))}")
        pretrain(cfg)
    for run in configs if study.tasks else ():
        say(f"[{study.name}] sweep {run}: tasks {', '.join(study.tasks)}")
        # Transfer tasks trained in chunks (eval.*.chunk_epochs) come back partial: continue them here, from
        # their saved state, as a rerun of the command would.
        while any(
            row.status == "partial"
            for row in sweep(out / run, study.tasks, study.checkpoints, study.sweep_overrides, on_row=on_row)
        ):
            say(f"[{study.name}] sweep {run}: next chunk")
    # <out>/report is the study's own: each rerun of the study rebuilds it.
    report = build_report([out / run for run in configs], out=out / "report", overwrite=True, **study.report)
    say(report.markdown.rstrip())
    say(f"[{study.name}] report: {report.index}")
    return report
