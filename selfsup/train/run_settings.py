"""A run's checkpoint records the config that trained it (train/loop.py compares a resuming command with
the checkpoint's, and config.yaml with the digest it keeps). Continuing a run with a setting that changes what is
trained is refused unless asked for (resume=changed); settings that only change how the run is watched,
saved or executed may change freely. Each training segment's changes are appended to config-history.jsonl
with the step they took effect at, so config.yaml (the newest settings) and the history give every step's."""

from __future__ import annotations

import datetime as dt
import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from selfsup.errors import UserError
from selfsup.settings import cli_text

HISTORY_NAME = "config-history.jsonl"

# Settings a run may change between segments without resume=changed, each with why (fnmatch patterns). They
# change neither the model, the data, the objective nor the optimisation; only identical settings promise
# bitwise-identical results. Every change is still recorded in config-history.jsonl.
FREE_SETTINGS = {
    "output_dir": "the run directory itself, however its path is spelled",
    "resume": "how this command continues the run, not what it trains",
    "trainer.epochs": "the run's length: extending a finished run is how it is made longer (the schedule stretches)",
    "trainer.max_steps": "the run's length, a cap for smoke and staged runs",
    "trainer.log_every": "how often metrics are logged",
    "trainer.progress": "the progress bar",
    "trainer.checkpoint_every": "which epoch checkpoints are kept; a save never changes the training state",
    "trainer.checkpoint_every_steps": "how often last.pt is saved mid-epoch",
    "trainer.num_workers": "loader processes: the same crop distribution, drawn in other workers' streams",
    "trainer.compile": "the kernels that compute the same network (rounding only)",
    "trainer.channels_last": "the memory layout of the same tensors (rounding only)",
    "trainer.nonfinite*": "act only at a non-finite step, where the old policy stopped the run",
    "data.bad_images": "acts only at an undecodable image, where `fail` stopped the run",
    "data.download": "fetches a missing dataset; the files are the same",
    "data.root": "where the same dataset (data.name) is read from: a node-local copy, another mount or cwd",
    "eval.*": "the online kNN monitor and the evaluation defaults: they read the model, never train it",
    "analysis.every": "measurements taken in eval mode without gradients",
}


def _leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a plain config container (lists are values)."""
    if not isinstance(node, dict):
        return {prefix: node}
    leaves = {}
    for key, value in node.items():
        leaves.update(_leaves(value, f"{prefix}{key}" if not prefix else f"{prefix}.{key}"))
    return leaves


def is_free(key: str) -> bool:
    """Whether `key` may change between segments of a run without resume=changed."""
    return any(fnmatchcase(key, pattern) for pattern in FREE_SETTINGS)


def setting_changes(saved: DictConfig, cfg: DictConfig) -> dict[str, tuple[Any, Any]]:
    """Each setting whose value differs from the saved config's: key -> (old, new), in config order. Keys the
    saved config lacks (settings added to selfsup since the run started) keep their old behaviour by default
    and are not compared."""
    old = _leaves(OmegaConf.to_container(saved, resolve=True))
    new = _leaves(OmegaConf.to_container(cfg, resolve=True))
    return {key: (old[key], value) for key, value in new.items() if key in old and old[key] != value}


def check_changes(out: Path, changes: dict[str, tuple[Any, Any]], resume: str, most: int = 8) -> None:
    """Refuse settings that change what is trained, unless resume=changed: one line naming each such key with
    its old and new value, and the two ways on."""
    locked = [key for key in changes if not is_free(key)]
    if not locked or resume == "changed":
        return
    more = f" (and {len(locked) - most} more)" if len(locked) > most else ""
    shown = locked[:most]
    raise UserError(
        f"output_dir {out} was trained with {', '.join(f'{k}={cli_text(changes[k][0])}' for k in shown)}{more}; "
        f"this command sets {', '.join(cli_text(changes[k][1]) for k in shown)}: choose a new output_dir=, or add "
        f"resume=changed to continue this run with them (recorded in {HISTORY_NAME})"
    )


def record_segment(out: Path, step: int, changes: dict[str, tuple[Any, Any]] | None) -> None:
    """Append one training segment to config-history.jsonl: the step it starts at, how (a new run, resumed
    with the same training settings, or with changed ones) and every setting it changed, old and new."""
    how = "new" if changes is None else "changed" if any(not is_free(key) for key in changes) else "resumed"
    record = {
        "step": step,
        "start": how,
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "changed": {key: {"old": old, "new": new} for key, (old, new) in (changes or {}).items()},
    }
    with open(out / HISTORY_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")
