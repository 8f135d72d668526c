"""`selfsup submit COMMAND ...`: any selfsup command as a SLURM job, through submitit.

Pretraining runs as `nodes x gpus_per_node` processes: each SLURM task is one training process (submitit
starts them with srun; lightning-fabric reads the rank from SLURM's environment). Near the time limit SLURM
signals the job (submitit asks for USR2): the loop saves last.pt, stops, and the first task requeues the job,
which resumes from last.pt by rerunning the same command. The run directory is the job's identity, as for any
`selfsup pretrain`.

Every other command (eval, sweep, study, report, export, bench, config) runs as one task that sees the node's
GPUs. Signalled near the time limit, it is requeued the same way and resumes by rerunning: an evaluation from
its per-epoch state, a sweep or a study from the results already written, a study's pretraining from last.pt.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from selfsup.errors import UserError, require_extra
from selfsup.settings import TEXT, Count, PositiveInt, from_keys, one_of, optional

CLUSTERS = ("slurm", "local")
Name = Annotated["str | None", optional(TEXT)]


@dataclass
class SlurmOptions:
    """`slurm.*` keys of `selfsup submit`, with submitit's meaning."""

    nodes: PositiveInt = 1
    gpus_per_node: Count = 1
    cpus_per_task: PositiveInt = 8
    mem_gb: PositiveInt | None = None  # per node; None: the partition's default
    time: PositiveInt = 4320  # minutes per job; the run continues in requeued jobs after that
    partition: Name = None
    account: Name = None
    qos: Name = None
    constraint: Name = None
    signal_delay_s: PositiveInt = 120  # time between the warning signal and the kill: a checkpoint must fit in it
    folder: Name = None  # submitit's logs; default <output_dir>/slurm
    cluster: Annotated[str, one_of(*CLUSTERS)] = "slurm"  # local: the job as a process on this machine

    @classmethod
    def from_keys(cls, keys: dict[str, str]) -> SlurmOptions:
        """From `slurm.NAME=value` pairs (NAME without the prefix), with one-line errors."""
        options = from_keys(cls, keys, "slurm")
        if options.cluster == "local" and options.nodes != 1:
            raise UserError(f"slurm.cluster=local runs on this machine: slurm.nodes must be 1, got {options.nodes}")
        return options

    @property
    def tasks_per_node(self) -> int:
        """One task per GPU on SLURM; locally one task, in which lightning-fabric starts the processes."""
        return max(self.gpus_per_node, 1) if self.cluster == "slurm" else 1

    def executor_parameters(self, job_name: str, one_task: bool = False) -> dict[str, Any]:
        """submitit AutoExecutor.update_parameters arguments; `one_task`: one process that sees every GPU of
        the node (any command but pretrain)."""
        params: dict[str, Any] = {
            "name": job_name,
            "timeout_min": self.time,
            "nodes": self.nodes,
            "tasks_per_node": 1 if one_task else self.tasks_per_node,
            "cpus_per_task": self.cpus_per_task,
        }
        if self.cluster == "slurm":
            params["gpus_per_node"] = self.gpus_per_node
            params["slurm_signal_delay_s"] = self.signal_delay_s
            if self.mem_gb is not None:
                params["mem_gb"] = self.mem_gb
            for name in ("partition", "account", "qos", "constraint"):
                if getattr(self, name) is not None:
                    params[f"slurm_{name}"] = getattr(self, name)
        return params

    def training_overrides(self) -> list[str]:
        """What the job adds to the pretraining command: its processes come from the allocation."""
        if self.cluster != "slurm":
            return []
        device = ["device=cuda"] if self.gpus_per_node else ["device=cpu"]
        return [f"trainer.devices={self.tasks_per_node}", f"trainer.num_nodes={self.nodes}", *device]


class CommandJob:
    """What each task of the job runs: `command(argv)`, a module-level function that returns an exit status
    (picklable for submitit). A job requeued by SLURM, or by submitit when signalled outside the training loop,
    reruns the same command, which resumes from what the interrupted one saved."""

    def __init__(self, command: Callable[[list[str]], int], argv: list[str]) -> None:
        self.command = command
        self.argv = argv

    def __call__(self) -> int:
        return self.command(self.argv)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(CommandJob(self.command, self.argv))


@dataclass
class Submitted:
    job_id: str
    folder: Path
    args: list[str]
    job: Any  # submitit.Job


def submit(args: list[str], options: SlurmOptions) -> Submitted:
    """Submit `selfsup pretrain ARGS` (already checked by composing its config) as one job."""
    from selfsup.eval.settings import pretraining_config
    from selfsup.train.command import pretrain_command

    pretrain_args = [*args, *options.training_overrides()]
    cfg = pretraining_config(pretrain_args)  # bad overrides fail here, before anything is queued
    folder = Path(options.folder or Path(cfg.output_dir) / "slurm")
    job = _queue(CommandJob(pretrain_command, pretrain_args), options, folder, Path(cfg.output_dir).name)
    return Submitted(job_id=str(job.job_id), folder=folder, args=pretrain_args, job=job)


def submit_command(command: Callable[[list[str]], int], argv: list[str], options: SlurmOptions) -> Submitted:
    """Submit any other command, `command(argv)` (the CLI's entry point and `[name, *args]`), as one task on one
    node; its logs go to slurm.folder, else beside its output (run=, out=) or under output/slurm."""
    if options.nodes != 1:
        raise UserError(f"only pretrain spreads over nodes: `selfsup submit {argv[0]}` needs slurm.nodes=1")
    keys = dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)
    where = Path(keys.get("out") or keys.get("run") or "output")
    folder = Path(options.folder or (where.parent if where.suffix else where) / "slurm")
    job = _queue(CommandJob(command, argv), options, folder, f"selfsup-{argv[0]}", one_task=True)
    return Submitted(job_id=str(job.job_id), folder=folder, args=argv, job=job)


SLURM_TOOLS = ("sbatch", "srun")


def _queue(job: CommandJob, options: SlurmOptions, folder: Path, name: str, one_task: bool = False) -> Any:
    require_extra("submitit", "slurm", "selfsup submit")
    import submitit

    # submitit needs both (sbatch queues, srun starts the tasks) and fails with a traceback without srun
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool) is None] if options.cluster == "slurm" else []
    if missing:
        raise UserError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH: submit from a SLURM "
            "login node, or try the job here with slurm.cluster=local"
        )
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster)
    executor.update_parameters(**options.executor_parameters(name, one_task))
    return executor.submit(job)
