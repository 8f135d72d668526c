"""Commands that write where the user says (report out=, export out=) never replace a file silently: one that
exists is refused in one line unless overwrite=true, since it may be someone's results."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from selfsup.errors import UserError

BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def overwrite_option(keys: dict[str, str]) -> bool:
    """The command-level overwrite= key (default false), with a one-line error when it is not a boolean."""
    text = keys.get("overwrite", "false").lower()
    if text not in BOOLEANS:
        raise UserError(f"overwrite={keys['overwrite']} is not a boolean; use overwrite=true or overwrite=false")
    return BOOLEANS[text]


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse to replace any of `paths` that exists, unless overwrite=true."""
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UserError(f"{existing[0]}{more} already exists; choose another out=, or add overwrite=true to replace it")


def require_directory(out: Path) -> None:
    """out= names a directory to write into; an existing file there is a mistake, not a place."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out={out} is a file; name a directory (out=DIR)")


def require_file(out: Path, example: str) -> None:
    """out= names a file to write; an existing directory there is a mistake, refused before any work."""
    if out.is_dir():
        raise UserError(f"out={out} is a directory; name the file to write (out=DIR/{example})")


def enclosing_run(path: Path) -> Path | None:
    """The pretraining run directory that `path` is or lies inside, or None: a folder holding config.yaml
    beside checkpoints/ or metrics.jsonl (either alone is too common a name to mean a run)."""
    for folder in (path.resolve(), *path.resolve().parents):
        if (folder / "config.yaml").is_file() and (
            (folder / "checkpoints").is_dir() or (folder / "metrics.jsonl").is_file()
        ):
            return folder
    return None
