"""The sweep directory's manifest: every run, its values, seed and state, and the sweep's fingerprint.

``manifest.json`` is rewritten whole, atomically (``lit_prune.atomic_files``), by the one
``lit-prune sweep`` process that holds the directory's lock; a crash leaves the previous version.
The fingerprint is a hash of the sweep's definition (grid, seeds, options, base stage, and the
contents of its config files): a sweep directory made by a different sweep is refused instead of
being written into.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lit_prune.atomic_files import atomic_write
from lit_prune.errors import UserError

__all__ = ["MANIFEST", "STATES", "Manifest", "RunEntry", "fingerprint", "sweep_lock"]

MANIFEST = "manifest.json"
STATES = ("pending", "running", "done", "failed")
_LOCK = ".sweep.lock"
_VERSION = 1


@dataclass
class RunEntry:
    """One run of the sweep as the manifest records it.

    Attributes:
        name: The run's directory name inside the sweep directory.
        kind: ``"base"`` (a shared dense run), ``"branch"`` (starts from a base) or ``"run"``.
        values: Its grid values (key to value).
        seed: Its seed.
        base: The name of its base run, for a branch.
        branch_epoch: The epoch at whose start it resumes its base, for a branch that does.
        state: ``pending``, ``running``, ``done`` or ``failed``.
        attempts: How often it was started.
        exit_code: The exit status of its last attempt.
        note: Why it failed, when it did.
        job_id: The job that runs it (SLURM or submitit's local executor).
        updated: When the entry last changed (UTC, ISO 8601).
    """

    name: str
    kind: str
    values: dict[str, Any]
    seed: int
    base: str | None = None
    branch_epoch: int | None = None
    state: str = "pending"
    attempts: int = 0
    exit_code: int | None = None
    note: str = ""
    job_id: str | None = None
    updated: str = field(default_factory=lambda: _now())


@dataclass
class Manifest:
    """The manifest of one sweep directory.

    Attributes:
        directory: The sweep directory.
        sweep: The sweep's name.
        fingerprint: The hash of its definition (see :func:`fingerprint`).
        definition: What defined it, for people (source file or command, grid, seeds, args).
        runs: The runs, bases first.
    """

    directory: Path
    sweep: str
    fingerprint: str
    definition: dict[str, Any]
    runs: list[RunEntry]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self.directory / MANIFEST

    def entry(self, name: str) -> RunEntry:
        """The entry of run ``name``."""
        return next(run for run in self.runs if run.name == name)

    def set_state(self, name: str, state: str, **changes: Any) -> None:
        """Changes a run's state (and other fields) and writes the manifest (thread-safe).

        Raises:
            ValueError: If ``state`` is not one of :data:`STATES`.
        """
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        with self._lock:
            entry = self.entry(name)
            entry.state = state
            for key, value in changes.items():
                setattr(entry, key, value)
            entry.updated = _now()
            self.write()

    def counts(self) -> dict[str, int]:
        """Runs per state."""
        return {state: sum(run.state == state for run in self.runs) for state in STATES}

    def write(self) -> None:
        """Writes ``manifest.json`` atomically."""
        content = {
            "version": _VERSION,
            "sweep": self.sweep,
            "fingerprint": self.fingerprint,
            "definition": self.definition,
            "counts": self.counts(),
            "runs": [asdict(run) for run in self.runs],
        }
        text = json.dumps(content, indent=2, sort_keys=False) + "\n"
        atomic_write(self.path, lambda path: path.write_text(text, encoding="utf-8"))

    @classmethod
    def open(
        cls,
        directory: Path,
        sweep: str,
        fingerprint_: str,
        definition: dict[str, Any],
        runs: Sequence[RunEntry],
    ) -> Manifest:
        """The manifest of a sweep directory: created, or read back and checked against this sweep.

        States of runs already recorded are kept (``done``, ``failed``; a ``running`` run left by a
        sweep that was stopped becomes ``pending`` and is resumed).

        Args:
            directory: The sweep directory (created if missing).
            sweep: The sweep's name.
            fingerprint_: The fingerprint of this sweep.
            definition: What defined it, for people.
            runs: Its runs, all ``pending``.

        Returns:
            The manifest, written.

        Raises:
            UserError: If the directory holds another sweep's manifest, or an unreadable one.
        """
        directory.mkdir(parents=True, exist_ok=True)
        manifest = cls(directory, sweep, fingerprint_, definition, list(runs))
        if manifest.path.is_file():
            recorded = _read(manifest.path)
            if recorded.get("fingerprint") != fingerprint_:
                raise UserError(_mismatch_message(directory, recorded, runs))
            previous = {run["name"]: run for run in recorded.get("runs", [])}
            for entry in manifest.runs:
                old = previous.get(entry.name)
                if old is not None:
                    entry.state = "pending" if old["state"] == "running" else old["state"]
                    entry.attempts = int(old.get("attempts", 0))
                    entry.exit_code = old.get("exit_code")
                    entry.note = old.get("note", "")
                    entry.job_id = old.get("job_id")
        elif any(directory.iterdir()) and not _only_lock(directory):
            raise UserError(
                f"{directory} exists and holds files but no {MANIFEST}: it was not made by lit-prune sweep; "
                "give another --output"
            )
        manifest.write()
        return manifest


def fingerprint(items: Sequence[Any]) -> str:
    """A SHA-256 over a JSON rendering of ``items`` (the sweep's definition)."""
    text = json.dumps(list(items), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextmanager
def sweep_lock(directory: Path) -> Iterator[None]:
    """Holds the sweep directory's lock: two ``lit-prune sweep`` processes never share a directory.

    Raises:
        UserError: If another process holds it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _LOCK
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise UserError(
                f"another lit-prune sweep ({owner}) is running in {directory}; wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path} cannot be read ({error}); it is not a manifest lit-prune sweep wrote") from None
    if not isinstance(content, dict) or "fingerprint" not in content:
        raise UserError(f"{path} is not a manifest lit-prune sweep wrote (no fingerprint)")
    return content


def _mismatch_message(directory: Path, recorded: dict[str, Any], runs: Sequence[RunEntry]) -> str:
    names = {run.name for run in runs}
    old = {run.get("name") for run in recorded.get("runs", [])}
    difference = ""
    if names != old:
        only_new, only_old = sorted(names - old)[:3], sorted(old - names)[:3]
        difference = f" (runs only in this sweep: {only_new}; only in the recorded one: {only_old})"
    else:
        difference = " (same runs, but their configs or options differ)"
    return (
        f"{directory} was made by a different sweep {recorded.get('sweep')!r}{difference}; re-running it needs the "
        "same definition. Give another --output, or delete that directory to start over"
    )


def _only_lock(directory: Path) -> bool:
    return [path.name for path in directory.iterdir()] == [_LOCK]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
