"""Checkpoints that are never half-written: temp file, fsync, rename; a SHA-256 sidecar to verify."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from selfsup.errors import UserError

FORMAT_VERSION = 1


def _new_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the process umask. mkstemp makes 0o600 files, which
    would hide checkpoints and reports from the rest of a group sharing an output directory."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# What mkstemp names the temporary sibling of NAME: `.NAME.` + 8 characters of its alphabet + `.tmp`.
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def temp_sibling(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path` (fd, name) that remove_stale_temps recognises."""
    return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete the temporary files that saves killed mid-write left in `folder` (each up to a checkpoint's
    size, so every preemption would leak disk); returns them. Only names this writer makes match."""
    stale = [
        Path(e.path)
        for e in (os.scandir(folder) if folder.is_dir() else ())
        if _TEMP_NAME.fullmatch(e.name) and e.is_file(follow_symlinks=False)
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_sibling(path)
    try:
        os.chmod(tmp, _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a results / config file so that readers see the old or the new file, never a partial one."""
    atomic_write_bytes(Path(path), text.encode())


def _serialise(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save with the same all-or-nothing guarantee (feature caches and other derived files)."""
    atomic_write_bytes(Path(path), _serialise(obj))


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
    data = _serialise({"format_version": FORMAT_VERSION, **state})
    digest = hashlib.sha256(data).hexdigest()
    for path in paths:
        path = Path(path)
        entry = f"{digest}  {path.name}\n"
        old = [f"{d}  {path.name}\n" for d in sidecar_digests(path)[-1:]] if path.is_file() else []
        atomic_write_bytes(sidecar_of(path), "".join([*old, entry]).encode())
        atomic_write_bytes(path, data)
        atomic_write_bytes(sidecar_of(path), entry.encode())
    return digest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise UserError(
            f"checkpoint {path} cannot be read ({type(err).__name__}); is it a selfsup checkpoint?"
        ) from None
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
