"""Checkpoints: written atomically with a SHA-256 sidecar to verify, loaded without running code, resolved
by name (last, best, epoch-N) inside a run."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from selfsup.errors import UserError
from selfsup.runs.files import atomic_write_bytes, file_sha256, load_tensors, serialise

FORMAT_VERSION = 1


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sidecar_digests(path: Path) -> list[str]:
    """The digests a checkpoint's sidecar accepts: one, or two while a save replaces the file (old, new)."""
    sidecar = sidecar_of(path)
    return [line.split()[0] for line in sidecar.read_text().splitlines() if line.strip()] if sidecar.is_file() else []


def save_checkpoint(state: dict[str, Any], *paths: Path) -> str:
    """Serialise `state` once and write it atomically to each path with a `.sha256` sidecar; returns the hash.

    The sidecar first lists the old and the new digest, then the file is replaced, then the sidecar lists
    the new digest alone: a process killed at any instant leaves a file its sidecar accepts."""
    data = serialise({"format_version": FORMAT_VERSION, **state})
    digest = hashlib.sha256(data).hexdigest()
    for path in paths:
        path = Path(path)
        entry = f"{digest}  {path.name}\n"
        old = [f"{d}  {path.name}\n" for d in sidecar_digests(path)[-1:]] if path.is_file() else []
        atomic_write_bytes(sidecar_of(path), "".join([*old, entry]).encode())
        try:
            atomic_write_bytes(path, data)
        except BaseException:
            if not old:  # a new checkpoint that could not be written leaves no sidecar naming it
                sidecar_of(path).unlink(missing_ok=True)
            raise
        atomic_write_bytes(sidecar_of(path), entry.encode())
    return digest


def checkpoint_digest(path: Path) -> str:
    """A checkpoint's SHA-256, from its sidecar when that names one digest (no save in progress)."""
    digests = sidecar_digests(Path(path))
    return digests[0] if len(digests) == 1 else file_sha256(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load with `weights_only=True` (no code runs from the file) after checking the sidecar hash."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    expected = sidecar_digests(path)
    if expected and file_sha256(path) not in expected:
        raise UserError(
            f"checkpoint {path} is corrupt (SHA-256 differs from {sidecar_of(path).name}); use another checkpoint"
        )
    state = load_tensors(path, "checkpoint {path} cannot be read ({error}); is it a selfsup checkpoint?")
    if not isinstance(state, dict) or "model" not in state or "format_version" not in state:
        raise UserError(f"{path} is not a selfsup checkpoint (no 'model' / 'format_version' entries)")
    return state


def checkpoint_candidates(ckpt_dir: Path) -> list[Path]:
    """The checkpoints on disk, newest first: last.pt, then the epoch checkpoints from the latest."""
    epochs = sorted(ckpt_dir.glob("epoch-*.pt"), reverse=True)
    return [p for p in [ckpt_dir / "last.pt", *epochs] if p.is_file()]


def newest_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint file on disk (unverified), or None: what a message names as the last good one."""
    candidates = checkpoint_candidates(ckpt_dir)
    return candidates[0] if candidates else None


def newest_good_checkpoint(ckpt_dir: Path, warn: Callable[[str], None]) -> tuple[dict[str, Any], Path] | None:
    """The state to resume from: last.pt, or, when it is corrupt or truncated, the newest epoch checkpoint
    that verifies (with a warning for each one skipped). None when the directory holds no checkpoint."""
    candidates = checkpoint_candidates(ckpt_dir)
    for path in candidates:
        try:
            return load_checkpoint(path), path
        except UserError as err:
            warn(f"warning: {err}; trying an older checkpoint")
    if candidates:
        raise UserError(f"no readable checkpoint in {ckpt_dir}; move that directory away to start the run over")
    return None


def backbone_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights from a method checkpoint (any method: they all name it `backbone`)."""
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    if not weights:
        raise UserError("the checkpoint holds no backbone weights (no 'backbone.*' keys)")
    return weights


def resolve_checkpoint(run_dir: Path, name: str) -> Path:
    """`last`, `epoch-0010`, a file name inside checkpoints/, or a path."""
    candidates = [Path(name), run_dir / "checkpoints" / name, run_dir / "checkpoints" / f"{name}.pt"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in (run_dir / "checkpoints").glob("*.pt"))
    raise UserError(
        f"no checkpoint {name!r} in {run_dir / 'checkpoints'} (available: {', '.join(available) or 'none'})"
    )
