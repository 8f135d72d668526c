"""One writer per run directory: `selfsup pretrain` holds an exclusive flock on `<output_dir>/run.lock` for the
run's life, so two trainings never interleave one run's files. The OS drops the lock when its holder exits or
dies, so the file a killed run leaves behind never blocks the next start. Readers (eval, sweep, report) take
no lock: they may read a run while it trains."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from selfsup.errors import UserError

LOCK_NAME = "run.lock"


class RunBusy(UserError):
    """Another process trains in this run directory: a start refused for it must leave the directory alone."""


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it into the file (empty while it is still writing)."""
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    return text or "another process"


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock (creating the folder) until the block exits; raise RunBusy naming the holder's PID
    and host when another process holds it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise UserError(f"output_dir {folder} is not writable ({err.strerror}); choose another output_dir=") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunBusy(
                f"output_dir {folder} is being trained by {_holder(fd)}; wait for it to finish or stop it, "
                "or choose another output_dir="
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
