"""Where the code that made a checkpoint or a result came from: the selfsup version and, only when the
package is imported from its own git checkout, that checkout's commit and whether it had uncommitted
changes. An installed copy inside someone else's repository records no commit rather than theirs."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from selfsup.version import __version__

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # selfsup/


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@functools.cache
def source() -> dict[str, str | bool | None]:
    """{selfsup_version, git_commit, git_dirty}; the git fields are None unless this package's parent
    directory is the top of a git work tree (asked once per process)."""
    top = _git("rev-parse", "--show-toplevel")
    own = top is not None and Path(top).resolve() == PACKAGE_DIR.parent
    commit = _git("rev-parse", "HEAD") if own else None
    status = _git("status", "--porcelain") if commit else None  # untracked source counts, ignored files not
    return {
        "selfsup_version": __version__,
        "git_commit": commit or None,
        "git_dirty": None if status is None else bool(status),
    }


def source_metadata() -> dict[str, str]:
    """`source()` as strings, for safetensors metadata: '' where unknown, 'true' / 'false' for git_dirty."""
    return {key: "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for key, v in source().items()}
