"""The pretrain command as one call, shared by the CLI and by jobs submitted to a cluster: compose the config,
train, and turn a run stopped by a signal (after saving) into the exit status shells and SLURM expect."""

from __future__ import annotations

import sys
from collections.abc import Callable

from selfsup.config import load_config
from selfsup.train.guards import Preempted, requeue_on_slurm
from selfsup.train.loop import pretrain


def until_preempted(work: Callable[[], object]) -> int:
    """Run `work`; exit status 0, or 128 + signal number when SIGTERM / SIGINT / SIGUSR1 / SIGUSR2 stopped a run
    after saving it (what shells and SLURM report for a signalled job; the same command resumes it)."""
    try:
        work()
    except Preempted as stop:
        requeued = requeue_on_slurm(stop.signum)
        print(f"selfsup: {stop}{' (SLURM job requeued)' if requeued else ''}", file=sys.stderr)
        return 128 + stop.signum
    return 0


def pretrain_command(args: list[str]) -> int:
    """`selfsup pretrain ARGS`: its exit status."""
    return until_preempted(lambda: pretrain(load_config(args)))
