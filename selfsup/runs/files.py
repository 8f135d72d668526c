"""Files that are never half-written: temp sibling, fsync, rename. Checkpoints, configs, results and
exports all go through here, so a killed process leaves the old file or the new one."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from selfsup.errors import STORAGE_ERRNOS, UserError


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
    """Write `data` to `path` through a temporary sibling. A storage error (errors.STORAGE_ERRNOS) is raised
    naming `path` when the system names no file (a write to a full disk); any other error of the target (a
    folder that takes no files, /proc) is one UserError naming it."""
    make_dir(path.parent)
    try:
        fd, tmp = temp_sibling(path)
    except OSError as err:
        raise _write_error(err, path) from None
    try:
        os.chmod(tmp, _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _write_error(err, path) from None
        raise


def make_dir(path: Path) -> None:
    """mkdir -p for an output, its errors named as atomic_write_bytes names them."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_error(err, path) from None


def _write_error(err: OSError, path: Path) -> Exception:
    if err.errno in STORAGE_ERRNOS:
        return OSError(err.errno, err.strerror, err.filename or str(path))
    return UserError(f"cannot write {path}: {err.strerror or err}; choose another output path")


def atomic_write_text(path: Path, text: str) -> None:
    """Write a results / config file so that readers see the old or the new file, never a partial one."""
    atomic_write_bytes(Path(path), text.encode())


def serialise(obj: Any) -> bytes:
    """torch.save into bytes, to write (and hash) once."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save with the same all-or-nothing guarantee (feature caches and other derived files)."""
    atomic_write_bytes(Path(path), serialise(obj))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_tensors(path: Path, refusal: str) -> Any:
    """torch.load with weights_only=True (no code runs from the file); a truncated or foreign file becomes one
    UserError, `refusal` with {path} and {error} (the exception's type) filled in."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise UserError(refusal.format(path=path, error=type(err).__name__)) from None
