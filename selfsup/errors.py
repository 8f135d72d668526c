"""Errors a user can fix: the CLI prints their one-line message and exits 2, without a traceback."""

from __future__ import annotations

import errno
import importlib.util
import shutil
from pathlib import Path


class UserError(Exception):
    """Bad input (config, path, dataset, checkpoint) explained in one line that names the fix."""


class SettingError(UserError, ValueError):
    """A library argument outside its declared rule (`SimCLR(backbone, temperature=-1)`): a ValueError to a
    caller in Python, and one line without a traceback, like any UserError, should the CLI meet it."""


def require_extra(module: str, extra: str, purpose: str) -> None:
    """Refuse, in one line naming the install command, a path that needs an optional dependency (an extra of
    the package) that is not installed; called before the path does any work."""
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{purpose} needs {module}, which is not installed: pip install 'selfsup[{extra}]'")


def nearest_existing(path: Path) -> Path | None:
    """`path` or its closest ancestor that exists: where a path not yet written has its free space."""
    return next((p for p in (path, *path.parents) if p.exists()), None)


# Errors of the storage under a path: the fix is the user's (space, limits, permissions), not the code's.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
STORAGE_FIXES = {errno.ENOSPC: "free space", errno.EDQUOT: "free space", errno.EFBIG: "raise the file size limit"}


def storage_error_line(err: OSError) -> str | None:
    """One line for a full, size-limited, read-only or forbidden write target, naming the path and its free
    space; None for any other OSError (a bug or a missing file, which keep their traceback or their own
    message)."""
    if err.errno not in STORAGE_ERRNOS:
        return None
    path = Path(err.filename) if err.filename else None
    where = f" {path}" if path else ""
    existing = nearest_existing(path) if path else None
    free = f"; {shutil.disk_usage(existing).free / 2**30:.2f} GiB free there" if existing else ""
    fix = STORAGE_FIXES.get(err.errno, "fix its permissions")
    intact = "(what was written before is intact)"
    return f"cannot write{where}: {err.strerror}{free}; {fix} or choose another output directory {intact}"
