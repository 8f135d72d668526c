"""`selfsup sweep run=DIR tasks=[...]`: evaluate every checkpoint of a run on every task, resumably.

Each (checkpoint, task) pair writes `eval/<checkpoint>/<task>.json` atomically. A pair whose result is
complete, was computed from the same checkpoint bytes (SHA-256) and with the same task settings is
skipped, so a sweep that was interrupted (or extended with new checkpoints or tasks) redoes only what is
missing; transfer tasks also resume their own training from `eval/<checkpoint>/<task>-state.pt`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfsup.errors import UserError
from selfsup.eval.offline import TASKS, evaluate, task_settings
from selfsup.eval.settings import evaluation_config
from selfsup.registry import close_matches_hint
from selfsup.runs.checkpoint import checkpoint_digest

EPOCH_CHECKPOINT = re.compile(r"epoch-(\d+)\.pt$")


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The epoch checkpoints in epoch order, plus `last.pt` when it is not a copy of the newest one
    (a run stopped between checkpoint epochs)."""
    ckpt_dir = run_dir / "checkpoints"
    epochs = sorted(
        (p for p in ckpt_dir.glob("epoch-*.pt") if EPOCH_CHECKPOINT.search(p.name)),
        key=lambda p: int(EPOCH_CHECKPOINT.search(p.name).group(1)),
    )
    last = ckpt_dir / "last.pt"
    if last.is_file() and checkpoint_digest(last) not in {checkpoint_digest(p) for p in epochs[-1:]}:
        epochs.append(last)
    if not epochs:
        raise UserError(f"no checkpoints in {ckpt_dir}: is {run_dir} the output_dir of `selfsup pretrain`?")
    return epochs


def is_done(result_path: Path, ckpt_hash: str, settings: dict[str, Any]) -> bool:
    if not result_path.is_file():
        return False
    try:
        result = json.loads(result_path.read_text())
    except json.JSONDecodeError:
        return False
    return (
        result.get("complete", True)
        and result.get("checkpoint", {}).get("sha256") == ckpt_hash
        and result.get("settings") == settings
    )


@dataclass
class SweepRow:
    checkpoint: str
    task: str
    status: str  # done (computed now) | skipped (already current) | partial (chunk ended)
    metrics: dict[str, float]


def sweep(
    run_dir: Path,
    tasks: list[str],
    checkpoints: list[str] | None = None,
    overrides: list[str] | None = None,
    on_row: Callable[[SweepRow], None] | None = None,
) -> list[SweepRow]:
    """Evaluate `checkpoints` (default: all of the run) on `tasks`, skipping current results."""
    run_dir = Path(run_dir)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        name = unknown[0] if unknown else ""
        raise UserError(
            f"unknown sweep task {name!r}{close_matches_hint(name, list(TASKS))}; tasks=[{','.join(TASKS)}]"
        )
    cfg = evaluation_config(run_dir, overrides or [])  # bad overrides fail before any work
    paths = run_checkpoints(run_dir)
    if checkpoints:
        by_name = {p.stem: p for p in paths}
        if paths:  # `last` names the newest checkpoint, also when last.pt is a copy of the final epoch's
            by_name.setdefault("last", paths[-1])
        missing = [c for c in checkpoints if c not in by_name]
        if missing:
            raise UserError(f"no checkpoint {missing[0]!r} in {run_dir} (available: {', '.join(by_name)})")
        paths = [by_name[c] for c in checkpoints]
    rows = []
    for path in paths:
        ckpt_hash = checkpoint_digest(path)
        for task in tasks:
            result_path = run_dir / "eval" / path.stem / f"{task}.json"
            if is_done(result_path, ckpt_hash, task_settings(cfg, task)):
                result, status = json.loads(result_path.read_text()), "skipped"
            else:
                result = evaluate(task, run_dir, path.stem, overrides)
                status = "done" if result["complete"] else "partial"
            row = SweepRow(path.stem, task, status, result["metrics"])
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return rows
