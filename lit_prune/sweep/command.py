"""``lit-prune sweep``: run an experiment (a grid of options times seeds) into one sweep directory.

::

    lit-prune sweep configs/sweeps/e1_oneshot.yaml
    lit-prune sweep --config configs/e1_oneshot_resnet20_cifar10.yaml \\
        --grid trainer.callbacks.target_sparsity=0.5,0.7,0.9 --seeds 0,1,2 [--key value ...]

Every combination is parsed first (nothing starts when one is wrong); then the base runs (if the
sweep shares a dense training), then every other run, each in its own directory under the sweep
directory (``--output``, by default ``lightning_logs/sweeps/<name>``), whose ``manifest.json``
tracks each run's state. Re-running the same command skips finished runs, resumes interrupted
ones and re-runs failed ones only with ``--retry-failed``. At the end the sweep directory gets the
experiment's table and plots (``lit-prune report`` over it). The exit status is 0 when every
run is done, 1 when some failed (their number is printed).
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from lit_prune.atomic_files import atomic_write
from lit_prune.errors import UserError
from lit_prune.report.comparison import compare_runs
from lit_prune.report.stats import write_sweep_report
from lit_prune.sweep.definition import (
    SweepDefinition,
    load_sweep_file,
    parse_grid_option,
    parse_seeds,
)
from lit_prune.sweep.execute import RunOutcome, RunTask, is_complete
from lit_prune.sweep.launchers import Launcher, LocalLauncher, SlurmOptions, SubmititLauncher
from lit_prune.sweep.manifest import Manifest, RunEntry, fingerprint, sweep_lock
from lit_prune.sweep.plan import PlannedRun, plan_runs
from lit_prune.sweep.resolve import ConfigResolver

__all__ = ["main"]

_DEFAULT_ROOT = Path("lightning_logs") / "sweeps"
_WORK_DIR = "_sweep"
_LAUNCHERS = ("local", "slurm", "submitit-local")


def main(args: list[str]) -> int:
    """Runs ``lit-prune sweep`` with the arguments after ``sweep``.

    Args:
        args: Command-line arguments.

    Returns:
        0 when every run is done, 1 when some failed.

    Raises:
        UserError: For bad input (an unknown key, an empty grid, a value a run's parser rejects,
            a sweep directory made by a different sweep, ...).
    """
    file = args[0] if args and not args[0].startswith("-") else None
    options, run_args = _parser().parse_known_args(args[1:] if file is not None else args)
    options.file = file
    definition = _definition(options, run_args)
    sweep_dir = Path(options.output) if options.output else _DEFAULT_ROOT / definition.name
    print(f"lit-prune sweep: {definition.name}: checking every run's config ...", flush=True)
    runs = plan_runs(definition, sweep_dir, ConfigResolver())
    with sweep_lock(sweep_dir):
        manifest = Manifest.open(
            sweep_dir,
            definition.name,
            fingerprint([definition.identity()]),
            _describe(definition, args),
            [RunEntry(run.name, run.kind, run.values, run.seed, run.base, run.branch_epoch) for run in runs],
        )
        _write_configs(sweep_dir, runs)
        failed = _execute(manifest, runs, _launcher(options, sweep_dir, definition.name), options.retry_failed)
        _write_report(sweep_dir, runs, definition)
    counts = manifest.counts()
    print(f"lit-prune sweep: {sweep_dir}: {counts['done']} of {len(runs)} runs done, {failed} failed")
    return 0 if failed == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-prune sweep",
        usage="lit-prune sweep [SWEEP_FILE] [options] [--key value ...]",
        allow_abbrev=False,
        description="Run every combination of a grid of options, for every seed, into one sweep directory. "
        "SWEEP_FILE (first, optional) is a sweep file such as configs/sweeps/e1_oneshot.yaml; options not listed "
        "here (--key value) are passed to every run.",
    )
    parser.add_argument("--config", help="the run config, for a sweep given on the command line")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="a grid axis (repeatable)")
    parser.add_argument("--seeds", help="seeds, e.g. 0,1,2 (default: the sweep file's, else 0)")
    parser.add_argument("--name", help="the sweep's name (default: the sweep file's, else the config's stem)")
    parser.add_argument("--output", metavar="DIR", help="the sweep directory (default: lightning_logs/sweeps/NAME)")
    parser.add_argument("--smoke", action="store_true", help="apply the sweep file's smoke section (tiny schedule)")
    parser.add_argument("--retry-failed", action="store_true", help="run the failed runs again")
    parser.add_argument("--launcher", choices=_LAUNCHERS, default="local", help="where runs go (default: local)")
    parser.add_argument(
        "--devices", help="local: GPU indices (e.g. 0,1,2,3) to run that many runs at once, one GPU each"
    )
    slurm = parser.add_argument_group("slurm (and submitit-local, the same code path on this machine)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time", type=int, default=60, metavar="MIN", help="time limit per job (default 60)")
    slurm.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run (default 1)")
    slurm.add_argument("--cpus-per-task", type=int, default=4, help="CPU cores per task (default 4)")
    slurm.add_argument("--mem-gb", type=float, help="memory per job in GB")
    slurm.add_argument("--array-parallelism", type=int, default=16, help="runs at once (default 16)")
    slurm.add_argument("--setup", action="append", default=[], metavar="LINE", help="shell line run before each job")
    return parser


def _definition(options: argparse.Namespace, run_args: Sequence[str]) -> SweepDefinition:
    """The sweep from a file or from --config/--grid/--seeds, with the pass-through options."""
    unknown = [arg for arg in run_args if arg.startswith("-") and not arg.startswith("--")]
    if unknown:
        raise UserError(f"unknown option {unknown[0]!r}; run options are written --key value or --key=value")
    if options.file and (options.config or options.grid):
        raise UserError("give either a sweep file or --config with --grid, not both")
    if options.file:
        definition = load_sweep_file(options.file)
        if options.seeds:
            definition = replace(definition, seeds=parse_seeds(options.seeds))
    elif options.config:
        grid = {}
        for text in options.grid:
            key, values = parse_grid_option(text)
            if key in grid:
                raise UserError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2")
            grid[key] = values
        definition = SweepDefinition(
            name=options.name or Path(options.config).stem,
            config=options.config,
            grid=grid,
            seeds=parse_seeds(options.seeds) if options.seeds else (0,),
        )
    else:
        raise UserError("give a sweep file (lit-prune sweep configs/sweeps/X.yaml) or --config X.yaml --grid KEY=V1,V2")
    if options.smoke:
        definition = definition.with_smoke()
    if options.file and options.name:
        definition = replace(definition, name=options.name)
    return definition.with_args(run_args)


def _launcher(options: argparse.Namespace, sweep_dir: Path, name: str) -> Launcher:
    if options.launcher == "local":
        return LocalLauncher(_devices(options.devices))
    for flag, value, minimum in (
        ("--time", options.time, 1),
        ("--gpus-per-run", options.gpus_per_run, 0),
        ("--cpus-per-task", options.cpus_per_task, 1),
        ("--array-parallelism", options.array_parallelism, 1),
    ):
        if value < minimum:
            raise UserError(f"{flag} must be >= {minimum}, got {value}")
    slurm = SlurmOptions(
        partition=options.partition,
        time_min=options.time,
        gpus_per_run=options.gpus_per_run,
        cpus_per_task=options.cpus_per_task,
        mem_gb=options.mem_gb,
        array_parallelism=options.array_parallelism,
        setup=tuple(options.setup),
    )
    cluster = "slurm" if options.launcher == "slurm" else "local"
    return SubmititLauncher(sweep_dir / _WORK_DIR / "submitit", slurm, cluster=cluster, name=f"sweep-{name}")


def _devices(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise UserError(f"--devices {text!r}: give GPU indices separated by commas, e.g. --devices 0,1") from None


def _describe(definition: SweepDefinition, args: Sequence[str]) -> dict[str, object]:
    return {
        "command": "lit-prune sweep " + shlex.join(args),
        "source": definition.source,
        "config": definition.config,
        "grid": definition.grid,
        "seeds": list(definition.seeds),
        "args": list(definition.args),
        "base": None if definition.base is None else definition.base.__dict__,
        "layout": None if definition.layout is None else definition.layout.__dict__,
    }


def _config_file(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / _WORK_DIR / "runs" / f"{name}.yaml"


def _log_file(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / _WORK_DIR / "logs" / f"{name}.log"


def _write_configs(sweep_dir: Path, runs: Sequence[PlannedRun]) -> None:
    (sweep_dir / _WORK_DIR / "runs").mkdir(parents=True, exist_ok=True)
    for run in runs:
        path = _config_file(sweep_dir, run.name)
        if not path.is_file() or path.read_text(encoding="utf-8") != run.config_text:
            atomic_write(path, lambda temporary, text=run.config_text: temporary.write_text(text, encoding="utf-8"))


def _execute(manifest: Manifest, runs: Sequence[PlannedRun], launcher: Launcher, retry_failed: bool) -> int:
    """Runs the bases, then the other runs; returns how many runs are failed at the end."""
    sweep_dir = manifest.directory
    for phase in ("base", "other"):
        todo = []
        for run in runs:
            if (run.kind == "base") != (phase == "base"):
                continue
            entry = manifest.entry(run.name)
            if entry.state == "done" and is_complete(sweep_dir / run.name):
                continue
            if entry.state == "failed" and not retry_failed:
                continue
            if run.base is not None and manifest.entry(run.base).state != "done":
                manifest.set_state(run.name, "failed", note=f"its base run {run.base} is not done", exit_code=None)
                print(f"lit-prune sweep: {run.name}: failed (its base run {run.base} is not done)", flush=True)
                continue
            todo.append(run)
        _launch(manifest, todo, launcher)
    failed = [run for run in manifest.runs if run.state == "failed"]
    for entry in failed:
        print(f"lit-prune sweep: failed: {entry.name} (log: {_log_file(sweep_dir, entry.name)})")
    if failed and not retry_failed:
        print("lit-prune sweep: re-run the same command with --retry-failed to run the failed runs again")
    return len(failed)


def _launch(manifest: Manifest, runs: Sequence[PlannedRun], launcher: Launcher) -> None:
    sweep_dir = manifest.directory
    tasks = []
    for run in runs:
        start = run.start_checkpoint(sweep_dir)
        task = RunTask(
            run_dir=str(sweep_dir / run.name),
            config_file=str(_config_file(sweep_dir, run.name)),
            log_file=str(_log_file(sweep_dir, run.name)),
            start_from=None if start is None else str(start),
        )
        tasks.append((run.name, task))

    def started(name: str, job_id: str | None) -> None:
        entry = manifest.entry(name)
        manifest.set_state(name, "running", attempts=entry.attempts + 1, job_id=job_id, note="")
        print(f"lit-prune sweep: {name}: running{'' if job_id is None else f' (job {job_id})'}", flush=True)

    def finished(name: str, outcome: RunOutcome | None, note: str) -> None:
        if outcome is not None and outcome.done:
            manifest.set_state(name, "done", exit_code=outcome.exit_code)
            print(f"lit-prune sweep: {name}: done (from {outcome.started_from})", flush=True)
            return
        exit_code = None if outcome is None else outcome.exit_code
        reason = note or f"lit-prune fit exited with {exit_code} without a complete report"
        manifest.set_state(name, "failed", exit_code=exit_code, note=reason)
        print(f"lit-prune sweep: {name}: failed ({reason.splitlines()[-1]})", flush=True)

    launcher.run(tasks, started, finished)


def _write_report(sweep_dir: Path, runs: Sequence[PlannedRun], definition: SweepDefinition) -> None:
    """The experiment's tables and plots (``lit-prune report`` over the sweep), from the runs that are done."""
    done = [str(sweep_dir / run.name) for run in runs if is_complete(sweep_dir / run.name)]
    if not done:
        return
    written = compare_runs(done, sweep_dir)
    written += write_sweep_report(sweep_dir, definition.layout)
    for path in written:
        print(f"lit-prune sweep: wrote {path}")
