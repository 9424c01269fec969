"""Where a sweep's runs execute: here, one after another (or one per GPU), or as a SLURM job array.

Both launchers take the same :class:`~lit_prune.sweep.execute.RunTask` objects and report back
through the same two callbacks (a run started, a run finished), so the sweep's bookkeeping does
not depend on where the runs go. The SLURM launcher uses submitit (``AutoExecutor``); with
``cluster="local"`` the same code path runs the jobs on this machine through submitit's local
executor, which is how it is tested and how a sweep can be tried before it is submitted.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import submitit
from submitit.helpers import as_completed

from lit_prune.sweep.execute import RunOutcome, RunTask

__all__ = ["Launcher", "LocalLauncher", "SlurmOptions", "SubmititLauncher"]

Started = Callable[[str, "str | None"], None]
Finished = Callable[[str, "RunOutcome | None", str], None]


class Launcher(Protocol):
    """Runs named tasks and reports when each starts and finishes."""

    def run(self, tasks: Sequence[tuple[str, RunTask]], started: Started, finished: Finished) -> None:
        """Runs the tasks; returns when all have finished.

        Args:
            tasks: Run name and task.
            started: Called with the run name and job id (``None`` locally) when it starts.
            finished: Called with the run name, its outcome (``None`` when the task itself
                crashed) and a note (the error) when it ends.
        """


@dataclass(frozen=True)
class LocalLauncher:
    """Runs the tasks on this machine: one after another, or one per listed GPU at a time.

    Attributes:
        devices: GPU indices; with several, that many runs go at once, each seeing one GPU
            (``CUDA_VISIBLE_DEVICES``). Empty: one run at a time, seeing every device.
    """

    devices: tuple[int, ...] = ()

    def run(self, tasks: Sequence[tuple[str, RunTask]], started: Started, finished: Finished) -> None:
        if len(self.devices) <= 1:
            for name, task in tasks:
                task = task if not self.devices else _on_gpu(task, self.devices[0])
                _run_here(name, task, started, finished)
            return
        free = list(self.devices)
        with ThreadPoolExecutor(max_workers=len(self.devices)) as pool:

            def work(name: str, task: RunTask) -> None:
                device = free.pop()
                try:
                    _run_here(name, _on_gpu(task, device), started, finished)
                finally:
                    free.append(device)

            for future in [pool.submit(work, name, task) for name, task in tasks]:
                future.result()


@dataclass(frozen=True)
class SlurmOptions:
    """What each run's SLURM job asks for.

    Attributes:
        partition: The partition (``None``: the cluster's default).
        time_min: The time limit of one job in minutes; a run that needs longer is requeued and
            resumes from its checkpoint.
        gpus_per_run: GPUs per run (its tasks, one per GPU, form Lightning's DDP world).
        cpus_per_task: CPU cores per task.
        mem_gb: Memory per job in GB (``None``: the partition's default).
        array_parallelism: At most this many runs of the array at once.
        max_requeues: How often a job may be requeued after a time-out.
        setup: Shell lines run before each job (``module load ...``, ``source venv/bin/activate``).
    """

    partition: str | None = None
    time_min: int = 60
    gpus_per_run: int = 1
    cpus_per_task: int = 4
    mem_gb: float | None = None
    array_parallelism: int = 16
    max_requeues: int = 3
    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubmititLauncher:
    """Submits the tasks as one job array through submitit and waits for them.

    Attributes:
        folder: Where submitit keeps its job files and logs.
        options: What each job asks for.
        cluster: ``"slurm"``, or ``"local"`` for submitit's local executor (tests, trials).
        name: The jobs' name.
    """

    folder: Path
    options: SlurmOptions
    cluster: str = "slurm"
    name: str = "lit-prune-sweep"

    def executor(self) -> submitit.AutoExecutor:
        """The configured submitit executor."""
        options = self.options
        executor = submitit.AutoExecutor(
            folder=self.folder, cluster=self.cluster, slurm_max_num_timeout=options.max_requeues
        )
        parameters: dict[str, object] = {
            "name": self.name,
            "timeout_min": options.time_min,
            "nodes": 1,
            "tasks_per_node": max(1, options.gpus_per_run),
            "gpus_per_node": options.gpus_per_run,
            "cpus_per_task": options.cpus_per_task,
        }
        if options.mem_gb is not None:
            parameters["mem_gb"] = options.mem_gb
        if self.cluster == "slurm":
            parameters["slurm_array_parallelism"] = options.array_parallelism
            if options.partition is not None:
                parameters["slurm_partition"] = options.partition
            if options.setup:
                parameters["slurm_setup"] = list(options.setup)
        elif options.gpus_per_run == 0:
            parameters.pop("gpus_per_node")
        executor.update_parameters(**parameters)
        return executor

    def run(self, tasks: Sequence[tuple[str, RunTask]], started: Started, finished: Finished) -> None:
        if not tasks:
            return
        executor = self.executor()
        jobs = executor.submit_array([task for _, task in tasks])
        names = {job.job_id: name for job, (name, _) in zip(jobs, tasks)}
        for job, (name, _) in zip(jobs, tasks):
            started(name, job.job_id)
        for job in as_completed(jobs, poll_frequency=2):
            name = names[job.job_id]
            try:
                outcome = job.results()[0]
            except (submitit.core.utils.UncompletedJobError, OSError) as error:
                finished(name, None, _last_lines(str(error)))
                continue
            finished(name, outcome, "")


def _run_here(name: str, task: RunTask, started: Started, finished: Finished) -> None:
    started(name, None)
    try:
        outcome = task()
    except Exception:  # noqa: BLE001 - one run's crash must not stop the sweep; it is recorded
        finished(name, None, _last_lines(traceback.format_exc()))
        return
    finished(name, outcome, "")


def _on_gpu(task: RunTask, device: int) -> RunTask:
    return replace(task, env={**task.env, "CUDA_VISIBLE_DEVICES": str(device)})


def _last_lines(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
