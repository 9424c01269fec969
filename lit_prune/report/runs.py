"""Finished runs for ``lit-prune report``: finding run directories, loading their reports, pairing baselines."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lit_prune.errors import UserError
from lit_prune.report.run_report import load_report
from lit_prune.report.schema import REPORT_JSON

__all__ = ["Run", "expand_run_dirs", "find_baseline", "load_runs"]

_GLOB_CHARACTERS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Run:
    """A finished run: where it is, what to call it, and its report.

    Attributes:
        path: The run directory.
        label: A short unique name (``<name>/<version>``, or the path when that is ambiguous).
        report: The contents of its ``report.json``.
    """

    path: Path
    label: str
    report: dict[str, Any]


def expand_run_dirs(patterns: Sequence[str]) -> list[Path]:
    """Expands run directories and glob patterns (for shells that do not) into run directories.

    A directory without ``report.json`` stands for every run directory below it that has one
    (``lightning_logs/e1`` for its ``version_*`` runs). Directories matched by a glob that hold no
    report are skipped with a message; a directory named explicitly is returned even without one
    (so that :func:`load_runs` names it in its error).

    Args:
        patterns: Directories or glob patterns such as ``lightning_logs/e1/version_*``.

    Returns:
        The run directories, in the order given (glob matches sorted), without duplicates.

    Raises:
        UserError: If ``patterns`` is empty, a pattern matches no directory, or no matched
            directory holds a report.
    """
    if not patterns:
        raise UserError("give at least one run directory, e.g. lit-prune report lightning_logs/quickstart/version_0")
    found: list[Path] = []
    for pattern in patterns:
        if _GLOB_CHARACTERS.search(pattern):
            matches = [Path(match) for match in sorted(glob.glob(pattern)) if Path(match).is_dir()]
            if not matches:
                raise UserError(
                    f"{pattern!r} matches no directory; give run directories such as lightning_logs/<name>/version_<n>"
                )
            for match in matches:
                runs = _runs_in(match)
                if not runs:
                    print(f"lit-prune report: skipping {match}: it has no {REPORT_JSON}")
                found.extend(runs)
        else:
            directory = Path(pattern)
            runs = _runs_in(directory) if directory.is_dir() else []
            found.extend(runs or [directory])
    unique: dict[Path, Path] = {}
    for directory in found:
        unique.setdefault(directory.resolve(), directory)
    if not unique:
        raise UserError(f"none of {list(patterns)} holds a run with a {REPORT_JSON}")
    return list(unique.values())


def load_runs(patterns: Sequence[str]) -> list[Run]:
    """Loads the reports of the given run directories.

    Args:
        patterns: Run directories or glob patterns (see :func:`expand_run_dirs`).

    Returns:
        One :class:`Run` per directory.

    Raises:
        FileNotFoundError: If a directory or its ``report.json`` is missing (the message names
            the directory and says how to write the report).
        ValueError: If a report is malformed or a pattern matches nothing.
    """
    directories = expand_run_dirs(patterns)
    reports = [load_report(directory) for directory in directories]
    short = [f"{d.resolve().parent.name}/{d.resolve().name}" for d in directories]
    labels = short if len(set(short)) == len(short) else [str(d) for d in directories]
    return [Run(path=d, label=label, report=r) for d, label, r in zip(directories, labels, reports)]


def find_baseline(run: Run, runs: Sequence[Run]) -> Run | None:
    """The dense run the given run is compared with.

    Args:
        run: The run.
        runs: All runs of the comparison.

    Returns:
        The first run with the same model and dataset whose method is ``"dense"``, or ``None``.
    """
    for candidate in runs:
        if (
            candidate.report["method"] == "dense"
            and candidate.report["model"] == run.report["model"]
            and candidate.report["dataset"] == run.report["dataset"]
        ):
            return candidate
    return None


def _runs_in(directory: Path) -> list[Path]:
    """The directory itself if it holds a report, else every directory below it that does."""
    if (directory / REPORT_JSON).is_file():
        return [directory]
    return sorted(path.parent for path in directory.rglob(REPORT_JSON))
