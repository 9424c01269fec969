"""Reading logged scalars back from a run directory's TensorBoard event files.

Lightning's ``TensorBoardLogger`` writes every ``log_metrics`` call as scalar events at a global
step, and adds a scalar ``epoch`` at the same step whenever a metric is logged through
``LightningModule.log``. :func:`read_scalars` loads all scalar series of one run directory (all
event files directly in it, e.g. a run and its resumption), and :func:`epoch_series` turns one
series into ``(epoch, value)`` points using that ``epoch`` scalar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

__all__ = ["ScalarPoint", "epoch_series", "has_event_files", "read_scalars"]

_EVENT_FILE_GLOB = "events.out.tfevents.*"


@dataclass(frozen=True)
class ScalarPoint:
    """One logged value of a scalar series.

    Attributes:
        step: The global step it was logged at.
        value: The logged value.
        wall_time: Seconds since the epoch when it was logged.
    """

    step: int
    value: float
    wall_time: float


def has_event_files(run_dir: str | Path) -> bool:
    """Tells whether ``run_dir`` directly contains TensorBoard event files.

    Args:
        run_dir: A run directory.

    Returns:
        ``True`` when at least one ``events.out.tfevents.*`` file is in it.
    """
    return any(Path(run_dir).glob(_EVENT_FILE_GLOB))


def read_scalars(run_dir: str | Path) -> dict[str, list[ScalarPoint]]:
    """Loads every scalar series logged in a run directory.

    All event files directly inside ``run_dir`` are read (subdirectories are other runs). When a
    step was logged more than once for a tag (a resumed run repeats the steps after its
    checkpoint), the value logged last wins.

    Args:
        run_dir: A run directory such as ``lightning_logs/quickstart/version_0``.

    Returns:
        Tag to points sorted by step; empty when the directory holds no event file.

    Raises:
        FileNotFoundError: If ``run_dir`` is not a directory.
    """
    directory = Path(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; give the run directory that holds the event files")
    if not has_event_files(directory):
        return {}
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    series: dict[str, list[ScalarPoint]] = {}
    for tag in accumulator.Tags()["scalars"]:
        latest: dict[int, ScalarPoint] = {}
        for event in sorted(accumulator.Scalars(tag), key=lambda e: e.wall_time):
            latest[int(event.step)] = ScalarPoint(int(event.step), float(event.value), float(event.wall_time))
        series[tag] = [latest[step] for step in sorted(latest)]
    return series


def epoch_series(scalars: dict[str, list[ScalarPoint]], tag: str) -> list[tuple[float, float]]:
    """Returns one series as ``(epoch, value)`` points.

    Each point takes the ``epoch`` scalar logged at the same step. A series with a point that has
    no ``epoch`` at its step (e.g. one written with ``logger.log_metrics(..., step=k)``) uses the
    step itself as the epoch for all its points, so a callback can log per-round curves with the
    epoch within the round as the step.

    Args:
        scalars: The result of :func:`read_scalars`.
        tag: The series to convert.

    Returns:
        ``(epoch, value)`` pairs in step order; empty when the tag was not logged.
    """
    points = scalars.get(tag, [])
    epochs = {point.step: point.value for point in scalars.get("epoch", [])}
    if all(point.step in epochs for point in points):
        return [(epochs[point.step], point.value) for point in points]
    return [(float(point.step), point.value) for point in points]
