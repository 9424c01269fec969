"""Running one run of a sweep: start it, resume it, or recognise that it is done.

A run is a ``lit-prune fit --config RUN.yaml`` subprocess (isolation: a crash, an out-of-memory
kill or a hung CUDA context takes one run down, not the sweep). It is done when its
``report.json`` is complete: ``callbacks.profiling.ProfilingCallback`` writes it last, atomically,
after fit. Otherwise, when its ``checkpoints/last.ckpt`` exists (written at the end of every
epoch), the run is resumed from it; a branch that has not started yet starts from its base
run's checkpoint; any other run starts from scratch. The same :class:`RunTask` is what the local
launcher calls and what submitit pickles into a SLURM job; on SLURM it is checkpointable: when
the job is preempted or reaches its time limit, the child is stopped and the job requeued, and the
requeued job resumes the run from ``last.ckpt``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from lit_prune.report import REPORT_JSON, load_report

__all__ = ["RunOutcome", "RunTask", "is_complete", "lit_prune_command"]

_STOP_GRACE_S = 60
_PR_SET_PDEATHSIG = 1


def is_complete(run_dir: Path) -> bool:
    """Tells whether a run's ``report.json`` is there and follows the report contract."""
    if not (run_dir / REPORT_JSON).is_file():
        return False
    try:
        load_report(run_dir)
    except (OSError, ValueError):
        return False
    return True


def lit_prune_command() -> list[str]:
    """The installed ``lit-prune`` console script beside this Python (else the one on PATH).

    Raises:
        RuntimeError: If there is none.
    """
    beside = Path(sys.executable).with_name("lit-prune")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("lit-prune")
    if found is None:
        raise RuntimeError("the lit-prune command is not installed; run `make install` (pip install -e .)")
    return [found]


@dataclass(frozen=True)
class RunOutcome:
    """What happened to a run.

    Attributes:
        done: Its report is complete.
        exit_code: The exit status of the ``lit-prune fit`` it ran (``None`` if it ran none).
        started_from: ``"scratch"``, ``"last.ckpt"``, the base checkpoint, or ``"done"``.
    """

    done: bool
    exit_code: int | None
    started_from: str


@dataclass
class RunTask(Checkpointable):
    """Runs one sweep run to completion (or failure); picklable for submitit.

    Attributes:
        run_dir: The run's directory.
        config_file: Its complete config.
        log_file: Where its output goes (appended across attempts).
        start_from: The base checkpoint a branch starts from, or ``None``.
        env: Environment variables set for the run (e.g. ``CUDA_VISIBLE_DEVICES``).
    """

    run_dir: str
    config_file: str
    log_file: str
    start_from: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def __call__(self) -> RunOutcome:
        """Starts, resumes or skips the run.

        Returns:
            The outcome.
        """
        run_dir = Path(self.run_dir)
        if is_complete(run_dir):
            return RunOutcome(True, None, "done")
        command = [*lit_prune_command(), "fit", "--config", self.config_file]
        last = run_dir / "checkpoints" / "last.ckpt"
        started_from = "scratch"
        if last.is_file():
            command += ["--ckpt_path", str(last)]
            started_from = "last.ckpt"
        elif self.start_from is not None:
            command += ["--ckpt_path", self.start_from]
            started_from = self.start_from
        Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            _CHILDREN[id(self)] = process
            try:
                exit_code = process.wait()
            finally:
                _CHILDREN.pop(id(self), None)
                if process.poll() is None:
                    _stop(process)
        return RunOutcome(is_complete(run_dir), exit_code, started_from)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """On preemption or time-out (submitit calls this): stop the child, requeue the same task.

        The requeued task finds the run's ``last.ckpt`` and resumes from it.
        """
        process = _CHILDREN.pop(id(self), None)
        if process is not None:
            _stop(process)
        again = RunTask(self.run_dir, self.config_file, self.log_file, self.start_from, dict(self.env))
        return DelayedSubmission(again)


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""The ``lit-prune fit`` process each running task started (not pickled with the task)."""


def _die_with_parent() -> None:
    """In the child, before it runs: ask Linux to SIGTERM it when the sweep process dies.

    Without this, a sweep killed hard would leave its run training on, unseen, while a re-run
    of the sweep resumes the same run directory.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stops a run's process group: SIGTERM, then SIGKILL after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=_STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        return
