"""`selfsup COMMAND key=value ...`: the command line. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from selfsup.errors import UserError, storage_error_line
from selfsup.settings import parse_list

USAGE = """selfsup COMMAND [key=value ...]

commands:
  pretrain  key=value ...                       pretrain a backbone (resumes when output_dir has last.pt;
                                                resume=changed: with settings other than it was trained with)
  eval TASK run=DIR [checkpoint=last] [baseline=epoch-0000] [model=FILE] ...
                                                evaluate one checkpoint; TASK is knn | linear (frozen
                                                features) | finetune | detection | segmentation (transfer);
                                                baseline= also scores that checkpoint (epoch-0000: the
                                                random init) and prints the gain over it; model= scores a
                                                kept fine-tuned, detection or segmentation model as is
  sweep run=DIR [tasks=[knn,linear]] [checkpoints=[...]] ...
                                                evaluate every checkpoint on every task; skips finished
                                                results and resumes interrupted ones
  report runs=[DIR,...] [out=report/] [hours_ref=p40 | hours_scale=2.5 hours_label="P40 hours"] [embedding=true] ...
                                                accuracy-vs-compute plots, results.csv/.md, dynamics and
                                                t-SNE plots of evaluated runs, in one self-contained index.html
                                                (overwrite=true: replace an earlier report in out/)
  export backbone run=DIR [checkpoint=last] out=FILE.safetensors [overwrite=true]
                                                write a checkpoint's backbone weights as safetensors (for
                                                backbone.weights=FILE or other code)
  export features run=DIR [checkpoint=last] [splits=[train,test]] out=DIR [overwrite=true]
                                                frozen features, labels and indices of each split as
                                                safetensors; `selfsup eval linear|knn features=[TRAIN,TEST]`
  submit pretrain key=value ... slurm.nodes=N slurm.gpus_per_node=G [slurm.partition=P slurm.time=MIN ...]
                                                the same pretraining as a SLURM job of N x G processes
                                                (submitit); requeued near its time limit, resumes itself
  submit COMMAND ... [slurm.gpus_per_node=G slurm.time=MIN ...]
                                                any other command (eval, sweep, study, report, export,
                                                bench) as a one-task job on one node, requeued the same way
  bench [stages=[compute,loader,full]] [variants=[fp32,channels_last,bf16]] [steps=3] [memory_budget_gb=G] ...
                                                images/s of pure compute, data path and full step; ratios,
                                                peak memory, largest batch within a memory budget
  study NAME [smoke=true] [out=DIR] [only=[RUN,...]] [hours_ref=p40 | hours_scale=X hours_label=L] [key=value ...]
                                                a published study end to end: its pretraining runs, sweep
                                                and report (smoke=true: minutes on a CPU; only=: those runs);
                                                NAME is a shipped study or the path of a study .yaml
  config    key=value ...                       print the composed config without running anything

examples:
  selfsup pretrain method=simclr data=cifar10 backbone=resnet18 trainer.epochs=100
  selfsup pretrain data=synthetic trainer.epochs=2 trainer.batch_size=64 output_dir=output/try
  selfsup eval knn run=output/try eval.knn.k=20
  selfsup eval linear run=output/try checkpoint=epoch-0002
  selfsup eval finetune run=output/try eval.finetune.data=stl10 eval.finetune.epochs=30
  selfsup sweep run=output/try tasks=[knn,linear,finetune]
  selfsup export backbone run=output/try out=output/try/backbone.safetensors
  selfsup report runs=[output/try,output/other] out=report/
  selfsup export features run=output/try out=output/try/features
  selfsup study simclr_toolbox smoke=true
  selfsup bench stages=[compute,full] trainer.batch_size=128
  selfsup submit pretrain method=byol_imagenet data=imagenet100 slurm.nodes=2 slurm.gpus_per_node=8
  selfsup submit sweep run=output/try tasks=[knn,linear] slurm.gpus_per_node=1
  selfsup config method=byol data=stl10
"""


def command_help(command: str) -> str:
    """One command's part of USAGE (each synopsis with its indented description) and its examples."""
    lines = USAGE.splitlines()
    section: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(f"  {command} "):
            section += [f"selfsup {line.strip()}", *itertools.takewhile(lambda s: s.startswith("    "), lines[i + 1 :])]
    examples = [line for line in lines if line.startswith(f"  selfsup {command} ")]
    text = ["usage:", *section]
    if command not in ("report", "export"):
        text += ["", "config keys: `selfsup config` prints every one with its value; key=value overrides any"]
    return "\n".join([*text, "", "examples:", *examples]) + "\n"


def _pop_keys(args: list[str], names: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
    """Split command-level keys (run=, checkpoint=) from config overrides."""
    picked, rest = {}, []
    for arg in args:
        key = arg.split("=", 1)[0]
        if key in names and "=" in arg:
            picked[key] = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return picked, rest


def given_list(keys: dict[str, str], key: str) -> list[str] | None:
    """A command-level list key: None when left out (the command's default, often all), refused when given
    empty, since `splits=[]` and `checkpoints=[]` silently meant all, the opposite of what they say."""
    if key not in keys:
        return None
    items = parse_list(keys[key])
    if not items:
        raise UserError(f"{key}=[] names nothing: leave {key}= out for the default, or name some ({key}=[a,b])")
    return items


def check_repeated_keys(args: list[str]) -> None:
    """Hydra (and a dict of command-level keys) would silently take the last of two values for one key,
    so `trainer.epochs=1 trainer.epochs=2` ran 2 epochs without a word; every command refuses it."""
    seen: dict[str, str] = {}
    for arg in args:
        if "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.strip().lstrip("+")
        if key in seen:
            raise UserError(f"{key} is given twice ({key}={seen[key]} and {key}={value}); give it once")
        seen[key] = value


def cmd_pretrain(args: list[str]) -> int:
    from selfsup.train.command import pretrain_command

    return pretrain_command(args)


def cmd_config(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from selfsup.eval.settings import pretraining_config

    print(OmegaConf.to_yaml(pretraining_config(args)), end="")


def cmd_eval(args: list[str]) -> None:
    from selfsup.eval.offline import TASKS, evaluate

    if not args or "=" in args[0]:
        raise UserError(f"say which evaluation: selfsup eval {'|'.join(TASKS)} run=DIR")
    task, rest = args[0], args[1:]
    keys, overrides = _pop_keys(rest, ("run", "checkpoint", "features", "baseline", "model"))
    if "features" in keys:
        return eval_features(task, keys["features"], overrides)
    if "run" not in keys:
        raise UserError("selfsup eval needs run=DIR, the output_dir of a pretraining run")
    if "baseline" in keys:  # a missing baseline is refused before the first evaluation writes anything
        from selfsup.runs.checkpoint import resolve_checkpoint

        resolve_checkpoint(Path(keys["run"]), keys["baseline"])
    model = Path(keys["model"]) if "model" in keys else None
    result = evaluate(task, Path(keys["run"]), keys.get("checkpoint", "last"), overrides, model)
    dataset = result["dataset"]
    where = f"{dataset.get('name', dataset.get('format', ''))} {dataset.get('test_split', '')}".strip()
    print(f"{task} on {where}: {format_metrics(result['metrics'])}")
    if not result["complete"]:
        print("partial: training stopped at its chunk; run the same command to continue")
    print(f"{'model ' + str(model) if model else 'checkpoint ' + result['checkpoint']['path']} -> {result['path']}")
    if "baseline" in keys:
        base = evaluate(task, Path(keys["run"]), keys["baseline"], overrides)
        print(f"{task} of {base['checkpoint']['path']}: {format_metrics(base['metrics'])} -> {base['path']}")
        print(f"gain over {keys['baseline']}: {format_gains(result['metrics'], base['metrics'])}")
    print(f"run directory: {keys['run']}")


def eval_features(task: str, files: str, overrides: list[str]) -> None:
    from selfsup.eval.export import evaluate_features

    paths = parse_list(files)
    if len(paths) != 2:
        raise UserError(
            "features= takes the train and the test file: features=[DIR/train.safetensors,DIR/test.safetensors]"
        )
    result = evaluate_features(task, Path(paths[0]), Path(paths[1]), overrides)
    dataset = result["dataset"]
    print(
        f"{task} on {dataset['name']} {dataset['test_split']} (exported features): {format_metrics(result['metrics'])}"
    )
    print(f"-> {result['path']}")


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def format_gains(metrics: dict[str, float], baseline: dict[str, float]) -> str:
    """Each metric beside its baseline value: `top1 30.12 -> 36.40 (+6.28)`."""
    return ", ".join(
        f"{k} {baseline[k]:.2f} -> {v:.2f} ({v - baseline[k]:+.2f})" for k, v in metrics.items() if k in baseline
    )


def show_row(row) -> None:
    """One sweep result as a line: checkpoint, task, status, metrics."""
    print(f"{row.checkpoint:>12}  {row.task:<12} {row.status:<8} {format_metrics(row.metrics)}", flush=True)


def cmd_sweep(args: list[str]) -> None:
    from selfsup.eval.offline import FEATURE_TASKS
    from selfsup.eval.sweep import sweep

    keys, overrides = _pop_keys(args, ("run", "tasks", "checkpoints"))
    if "run" not in keys:
        raise UserError("selfsup sweep needs run=DIR, the output_dir of a pretraining run")
    tasks = given_list(keys, "tasks") or list(FEATURE_TASKS)
    checkpoints = given_list(keys, "checkpoints")

    rows = sweep(Path(keys["run"]), tasks, checkpoints, overrides, on_row=show_row)
    partial = sum(row.status == "partial" for row in rows)
    print(
        f"{len(rows)} results in {Path(keys['run']) / 'eval'}"
        + (f"; {partial} partial: rerun to continue" if partial else "")
    )


def cmd_report(args: list[str]) -> None:
    from selfsup.report import OPTIONS, build_report, parse_options

    keys, rest = _pop_keys(args, OPTIONS)
    if "runs" not in keys:
        raise UserError("selfsup report needs runs=[DIR,...], output_dirs of pretraining runs evaluated by sweep")
    report = build_report([Path(p) for p in parse_list(keys["runs"])], **parse_options(keys, rest))
    print(report.markdown, end="")
    print(report.index)


FEATURES_USAGE = (
    "selfsup export features run=DIR [checkpoint=last] [splits=[train,test]] out=DIR [overwrite=true] [data=...]"
)


def cmd_export(args: list[str]) -> None:
    from selfsup.nets.weights import export_backbone
    from selfsup.runs.outputs import overwrite_option

    usage = "selfsup export backbone run=DIR [checkpoint=last] out=FILE.safetensors [overwrite=true] [backbone.name=F]"
    if args and args[0] == "features":
        return export_features_command(args[1:])
    if not args or args[0] != "backbone":
        raise UserError(f"say what to export: {usage}, or {FEATURES_USAGE}")
    keys, rest = _pop_keys(args[1:], ("run", "checkpoint", "out", "overwrite", "backbone.name"))
    if rest or "run" not in keys or "out" not in keys:
        extra = f"; unexpected {' '.join(rest)}" if rest else ""
        raise UserError(f"usage: {usage}{extra}")
    run, checkpoint, out = keys["run"], keys.get("checkpoint", "last"), keys["out"]
    meta = export_backbone(run, checkpoint, out, overwrite_option(keys), keys.get("backbone.name"))
    print(
        f"{meta['architecture']} backbone ({meta['feature_dim']}-d features) of "
        f"{meta['method']} checkpoint {keys.get('checkpoint', 'last')} in {keys['run']} -> {keys['out']}"
    )


def cmd_study(args: list[str]) -> int:
    from selfsup.runs.outputs import BOOLEANS
    from selfsup.study import load_study, run_study, study_names, with_only

    keys, rest = _pop_keys(args, ("experiment", "smoke", "out", "only", "hours_scale", "hours_label", "hours_ref"))
    name = keys.get("experiment")
    if name is None:
        if not rest or "=" in rest[0]:
            raise UserError(f"say which study: selfsup study NAME [smoke=true] (studies: {', '.join(study_names())})")
        name, rest = rest[0], rest[1:]
    smoke_text = keys.get("smoke", "false").lower()
    if smoke_text not in BOOLEANS:
        raise UserError(f"smoke={keys['smoke']} is not a boolean; use smoke=true or smoke=false")
    smoke = BOOLEANS[smoke_text]
    study = load_study(name, smoke)
    if "only" in keys:
        study = with_only(study, parse_list(keys["only"]))
    report_keys = {k: keys[k] for k in ("hours_scale", "hours_label", "hours_ref") if k in keys}
    if report_keys:
        from selfsup.report import parse_options

        options = parse_options(report_keys, [])
        study.report.update({k: v for k, v in options.items() if k in report_keys})  # not report's out, overwrite
    out = Path(keys.get("out", f"output/study-{study.name}{'-smoke' if smoke else ''}"))
    from selfsup.train.command import until_preempted

    return until_preempted(lambda: run_study(study, out, rest, on_row=show_row))


SUBMIT_USAGE = (
    "selfsup submit COMMAND [key=value ...] [slurm.nodes=N (pretrain only) slurm.gpus_per_node=G "
    "slurm.partition=P slurm.time=MINUTES slurm.cpus_per_task=C slurm.mem_gb=M slurm.account=A slurm.qos=Q "
    "slurm.cluster=slurm|local]; COMMAND is any of pretrain, eval, sweep, study, report, export, bench, config"
)


def cmd_submit(args: list[str]) -> int:
    from selfsup.tools.submit import SlurmOptions, submit, submit_command

    if not args or args[0] not in COMMANDS or args[0] == "submit":
        raise UserError(f"usage: {SUBMIT_USAGE}")
    slurm = {a.split("=", 1)[0].removeprefix("slurm."): a.split("=", 1)[1] for a in args if a.startswith("slurm.")}
    if any(a.startswith("slurm.") and "=" not in a for a in args):
        raise UserError(f"slurm options are key=value pairs: {SUBMIT_USAGE}")
    options = SlurmOptions.from_keys(slurm)
    command = [a for a in args if not a.startswith("slurm.")]
    if command[0] == "pretrain":
        from selfsup.config import load_config
        from selfsup.train.loop import batch_plan

        job = submit(command[1:], options)
        cfg = load_config(job.args)
        print(
            f"submitted job {job.job_id} ({options.cluster}): {options.nodes} node(s) x {options.tasks_per_node} "
            f"task(s); {batch_plan(cfg, cfg.trainer.devices * cfg.trainer.num_nodes)}"
        )
        print(f"run directory: {cfg.output_dir}; job logs: {job.folder / job.job_id}")
    else:
        job = submit_command(main, command, options)
        print(f"submitted job {job.job_id} ({options.cluster}): selfsup {' '.join(command)}")
        print(f"job logs: {job.folder / job.job_id}")
    if options.cluster == "slurm":
        return 0
    status = job.job.result()  # a local job: wait for it, as a foreground command would
    print(f"job {job.job_id} finished with exit status {status}")
    return int(status)


def export_features_command(args: list[str]) -> None:
    from selfsup.eval.export import export_features
    from selfsup.runs.outputs import overwrite_option

    keys, overrides = _pop_keys(args, ("run", "checkpoint", "splits", "out", "overwrite"))
    if "run" not in keys or "out" not in keys:
        raise UserError(f"usage: {FEATURES_USAGE}")
    splits = given_list(keys, "splits")
    run, checkpoint, out = Path(keys["run"]), keys.get("checkpoint", "last"), Path(keys["out"])
    for path in export_features(run, checkpoint, splits, out, overrides, overwrite_option(keys)):
        print(f"-> {path}")


def cmd_bench(args: list[str]) -> None:
    from dataclasses import fields

    from selfsup.config import load_config
    from selfsup.runs.outputs import require_file
    from selfsup.settings import from_keys
    from selfsup.tools.bench import BenchSettings, bench, default_out, format_table, save_record

    keys, overrides = _pop_keys(args, tuple(f.name for f in fields(BenchSettings)))
    settings = from_keys(BenchSettings, keys, "")
    cfg = load_config(overrides)
    out = Path(settings.out) if settings.out is not None else default_out(cfg)
    require_file(out, "bench.json")  # before the minutes of measuring
    record = bench(
        cfg,
        list(settings.stages),
        settings.variants,
        settings.steps,
        settings.warmup,
        memory_budget_gb=settings.memory_budget_gb,
        peak_tflops=settings.peak_tflops,
    )
    save_record(record, out)
    print(format_table(record), end="")
    print(f"-> {out}")


def error_line(err: UserError) -> str:
    """A UserError's one line; one raised in a DataLoader worker reaches the CLI with the worker's traceback
    prepended to it, so there it is the last line."""
    lines = str(err).strip().splitlines()
    return lines[-1].removeprefix(f"{UserError.__module__}.{UserError.__name__}: ") if lines else ""


COMMANDS = {
    "pretrain": cmd_pretrain,
    "bench": cmd_bench,
    "submit": cmd_submit,
    "study": cmd_study,
    "eval": cmd_eval,
    "sweep": cmd_sweep,
    "report": cmd_report,
    "export": cmd_export,
    "config": cmd_config,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="selfsup", usage=USAGE, add_help=False)
    parser.add_argument("command", nargs="?")
    parser.add_argument("-h", "--help", action="store_true")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if argv[0] in ("-V", "--version"):
        from selfsup.version import __version__

        print(f"selfsup {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS and any(arg in ("-h", "--help") for arg in rest):
        print(command_help(command), end="")
        return 0
    try:
        if command not in COMMANDS:
            from selfsup.registry import close_matches_hint

            raise UserError(
                f"unknown command {command!r}{close_matches_hint(command, list(COMMANDS))} "
                f"(commands: {', '.join(COMMANDS)})"
            )
        check_repeated_keys(rest)
        status = COMMANDS[command](rest)
    except UserError as err:
        print(f"selfsup: error: {error_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only or forbidden path, anywhere in any command
        line = storage_error_line(err)
        if line is None:
            raise
        print(f"selfsup: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
