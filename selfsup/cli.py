"""`selfsup COMMAND key=value ...`: the command line. User errors print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from selfsup.errors import UserError

USAGE = """selfsup COMMAND [key=value ...]

commands:
  pretrain  key=value ...                       pretrain a backbone (resumes when output_dir has last.pt)
  eval TASK run=DIR [checkpoint=last] ...       evaluate one checkpoint; TASK is knn | linear (frozen
                                                features) | finetune | detection | segmentation (transfer)
  sweep run=DIR [tasks=[knn,linear]] [checkpoints=[...]] ...
                                                evaluate every checkpoint on every task; skips finished
                                                results and resumes interrupted ones
  config    key=value ...                       print the composed config without running anything

examples:
  selfsup pretrain method=simclr data=cifar10 backbone=resnet18 trainer.epochs=100
  selfsup pretrain data=synthetic trainer.epochs=2 trainer.batch_size=64 output_dir=output/try
  selfsup eval knn run=output/try eval.knn.k=20
  selfsup eval linear run=output/try checkpoint=epoch-0002
  selfsup eval finetune run=output/try eval.finetune.data=stl10 eval.finetune.epochs=30
  selfsup sweep run=output/try tasks=[knn,linear,finetune]
"""


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


def cmd_pretrain(args: list[str]) -> None:
    from selfsup.config import load_config
    from selfsup.train.loop import pretrain

    pretrain(load_config(args))


def cmd_config(args: list[str]) -> None:
    from omegaconf import OmegaConf

    from selfsup.config import load_config

    print(OmegaConf.to_yaml(load_config(args)), end="")


def cmd_eval(args: list[str]) -> None:
    from selfsup.eval.offline import TASKS, evaluate

    if not args or "=" in args[0]:
        raise UserError(f"say which evaluation: selfsup eval {'|'.join(TASKS)} run=DIR")
    task, rest = args[0], args[1:]
    keys, overrides = _pop_keys(rest, ("run", "checkpoint"))
    if "run" not in keys:
        raise UserError("selfsup eval needs run=DIR, the output_dir of a pretraining run")
    result = evaluate(task, Path(keys["run"]), keys.get("checkpoint", "last"), overrides)
    dataset = result["dataset"]
    where = f"{dataset.get('name', dataset.get('format', ''))} {dataset.get('test_split', '')}".strip()
    print(f"{task} on {where}: {format_metrics(result['metrics'])}")
    if not result["complete"]:
        print("partial: training stopped at its chunk; run the same command to continue")
    print(f"checkpoint {result['checkpoint']['path']} -> {result['path']}")
    print(f"run directory: {keys['run']}")


def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())


def cmd_sweep(args: list[str]) -> None:
    from selfsup.eval.offline import FEATURE_TASKS
    from selfsup.eval.sweep import parse_list, sweep

    keys, overrides = _pop_keys(args, ("run", "tasks", "checkpoints"))
    if "run" not in keys:
        raise UserError("selfsup sweep needs run=DIR, the output_dir of a pretraining run")
    tasks = parse_list(keys.get("tasks", ",".join(FEATURE_TASKS)))
    checkpoints = parse_list(keys["checkpoints"]) if "checkpoints" in keys else None

    def show(row) -> None:
        print(f"{row.checkpoint:>12}  {row.task:<12} {row.status:<8} {format_metrics(row.metrics)}", flush=True)

    rows = sweep(Path(keys["run"]), tasks, checkpoints, overrides, on_row=show)
    partial = sum(row.status == "partial" for row in rows)
    print(
        f"{len(rows)} results in {Path(keys['run']) / 'eval'}"
        + (f"; {partial} partial: rerun to continue" if partial else "")
    )


COMMANDS = {"pretrain": cmd_pretrain, "eval": cmd_eval, "sweep": cmd_sweep, "config": cmd_config}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="selfsup", usage=USAGE, add_help=False)
    parser.add_argument("command", nargs="?")
    parser.add_argument("-h", "--help", action="store_true")
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command not in COMMANDS:
            from selfsup.registry import close_matches_hint

            raise UserError(
                f"unknown command {command!r}{close_matches_hint(command, list(COMMANDS))} "
                f"(commands: {', '.join(COMMANDS)})"
            )
        COMMANDS[command](rest)
    except UserError as err:
        print(f"selfsup: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("selfsup: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
