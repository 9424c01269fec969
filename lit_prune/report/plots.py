"""The figures of a report: training curves per epoch, and test accuracy against parameter reduction.

Rules every figure follows, so a reader can trust it:

* one colour per run, the same in every figure of a report (:func:`run_colors`);
* every curve has a legend entry, and legend texts are the run labels and methods in full;
* legends sit below the axes, outside them, so they never cover a curve or an axis label;
* axes are labelled with their units;
* per-round curves of iterative methods (``lth/round_<r>/...``, logged against the epoch within
  the round) get a panel of their own, with "epoch within the round" as its axis; drawn on the
  run's global epoch axis they would look like the first epochs of the run.

Each ``*_figure`` function returns the matplotlib ``Figure`` (tests read its legends and line
colours back), :func:`save_figure` writes one atomically, :func:`write_plots` does all three.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lit_prune.atomic_files import atomic_write
from lit_prune.report.runs import Run
from lit_prune.tensorboard_scalars import ScalarPoint, epoch_series, read_scalars

__all__ = [
    "ACCURACY_VS_EPOCH",
    "ACCURACY_VS_SPARSITY",
    "LOSS_VS_EPOCH",
    "reduction_figure",
    "run_colors",
    "save_figure",
    "training_curves_figure",
    "write_plots",
]

ACCURACY_VS_EPOCH = "accuracy_vs_epoch.png"
LOSS_VS_EPOCH = "loss_vs_epoch.png"
ACCURACY_VS_SPARSITY = "accuracy_vs_sparsity.png"
"""Test top-1 against the overall parameter reduction (the name is kept from earlier versions)."""

_ROUND_TAG = re.compile(r"^lth/round_(?P<round>\d+)/(?P<split>val|train)[_/](?P<metric>top1|loss)(?:_epoch)?$")
_PANELS = {
    "accuracy": (
        ("Validation top-1 accuracy", ("val/top1",)),
        ("Training top-1 accuracy", ("train/top1_epoch", "train/top1")),
    ),
    "loss": (
        ("Validation loss", ("val/loss", "val/loss_epoch")),
        ("Training loss (epoch mean)", ("train/loss_epoch", "train/loss")),
    ),
}
_ROUND_SPLITS = {"accuracy": (("val", "top1"),), "loss": (("val", "loss"), ("train", "loss"))}
_Y_LABELS = {"accuracy": "Top-1 accuracy (%)", "loss": "Cross-entropy loss (nats)"}
_ROUND_STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 1)), "P"))
_FONT_SIZE = 11
_DPI = 150
_LEGEND_WRAP = 70
_AXES_HEIGHT = 5.0


def run_colors(runs: Sequence[Run]) -> dict[str, str]:
    """One distinct colour per run, by its label, for every figure of a report.

    Args:
        runs: The runs, in the order of the report.

    Returns:
        Run label to a hex colour (tab10 up to 10 runs, tab20 up to 20, then evenly spaced hues).
    """
    count = len(runs)
    if count <= 10:
        palette = [to_hex(color) for color in colormaps["tab10"].colors[:count]]
    elif count <= 20:
        palette = [to_hex(color) for color in colormaps["tab20"].colors[:count]]
    else:
        palette = [to_hex(colormaps["hsv"](index / count)) for index in range(count)]
    return {run.label: color for run, color in zip(runs, palette)}


def training_curves_figure(runs: Sequence[Run], kind: str, colors: dict[str, str]) -> Figure | None:
    """Validation and training curves of every run against its epoch, and per-round curves apart.

    Args:
        runs: The runs; their TensorBoard event files are read.
        kind: ``"accuracy"`` (top-1, in %) or ``"loss"`` (cross-entropy).
        colors: :func:`run_colors` of the report.

    Returns:
        The figure, or ``None`` when no run logged any of the curves.

    Raises:
        ValueError: If ``kind`` is not ``"accuracy"`` or ``"loss"``.
    """
    if kind not in _PANELS:
        raise ValueError(f"kind must be one of {sorted(_PANELS)}, got {kind!r}")
    scale = 100.0 if kind == "accuracy" else 1.0
    scalars = {run.label: read_scalars(run.path) for run in runs}
    rounds = {run.label: _round_tags(scalars[run.label], kind) for run in runs}
    has_rounds = any(rounds.values())
    figure, axes = _figure(ncols=3 if has_rounds else 2)
    plotted = [False] * len(axes)
    pruned = False
    for run in runs:
        color = colors[run.label]
        for index, (_, tags) in enumerate(_PANELS[kind]):
            tag = next((t for t in tags if t in scalars[run.label]), None)
            if tag is not None:
                points = epoch_series(scalars[run.label], tag)
                plotted[index] |= _plot_series(axes[index], points, scale, color, "-", "o", _run_label(run))
        for round_index, split, tag in rounds[run.label]:
            linestyle, marker = _ROUND_STYLES[round_index % len(_ROUND_STYLES)]
            label = f"{run.label} · round {round_index}"
            if kind == "loss":
                label += " (validation)" if split == "val" else " (training, dotted)"
                linestyle = linestyle if split == "val" else ":"
            points = [(float(point.step), point.value) for point in scalars[run.label][tag]]
            plotted[2] |= _plot_series(axes[2], points, scale, color, linestyle, marker, label)
        pruned |= _mark_pruning(axes[:2], run, color)
    if not any(plotted):
        return None
    titles = [title for title, _ in _PANELS[kind]]
    if has_rounds:
        titles.append(f"Per round: {'validation top-1' if kind == 'accuracy' else 'validation and training loss'}")
    for index, (axis, has_data, title) in enumerate(zip(axes, plotted, titles)):
        axis.set_title(title)
        axis.set_xlabel("Epoch within the round" if index == 2 else "Epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(_Y_LABELS[kind])
        axis.grid(True, alpha=0.3)
        if not has_data:
            axis.text(0.5, 0.5, "not logged by any run", ha="center", va="center", transform=axis.transAxes)
    extra = [Line2D([], [], color="grey", linestyle=":", linewidth=1.2, label="pruning step (in the run's colour)")]
    figure.suptitle(f"{'Accuracy' if kind == 'accuracy' else 'Loss'} per epoch", fontsize=_FONT_SIZE + 3)
    _legend_below(figure, axes, extra if pruned else [])
    return figure


def reduction_figure(runs: Sequence[Run], colors: dict[str, str]) -> Figure | None:
    """Test top-1 of every run against its overall parameter reduction, with its pruning stages.

    The x-axis is the ``reduction.overall_reduction`` of each report: the fraction of the unpruned
    architecture's parameters removed or zeroed, the same measure for structured and unstructured
    methods. A run's recorded stages (baseline, pruned, rounds, fine-tuned) are hollow markers at
    their validation top-1, joined by a dotted line in the run's colour.

    Args:
        runs: The runs.
        colors: :func:`run_colors` of the report.

    Returns:
        The figure, or ``None`` when no run has both a test top-1 and a reduction.
    """
    points = [run for run in runs if run.report["accuracy"]["test_top1"] is not None and _reduction(run) is not None]
    if not points:
        return None
    figure, (axis,) = _figure(ncols=1, width=9.0)
    for run in points:
        color = colors[run.label]
        dense = run.report["method"] == "dense"
        axis.plot(
            [100.0 * _reduction(run)],
            [100.0 * run.report["accuracy"]["test_top1"]],
            linestyle="none",
            marker="*" if dense else "o",
            markersize=15 if dense else 9,
            color=color,
            zorder=5,
            label=f"{_run_label(run)} (test)",
        )
        stages = [
            s for s in run.report["stages"] if s.get("val_top1") is not None and s.get("overall_reduction") is not None
        ]
        if stages:
            axis.plot(
                [100.0 * s["overall_reduction"] for s in stages],
                [100.0 * s["val_top1"] for s in stages],
                linestyle=":",
                marker="o",
                markersize=6,
                markerfacecolor="none",
                color=color,
                alpha=0.9,
                label=f"{run.label} · stages {' → '.join(s['name'] for s in stages)} (validation)",
            )
    axis.set_title("Top-1 accuracy vs parameter reduction")
    axis.set_xlabel("Overall parameter reduction (% of the unpruned network's parameters removed or zeroed)")
    axis.set_ylabel("Top-1 accuracy (%)")
    axis.set_xlim(-2, 102)
    axis.grid(True, alpha=0.3)
    _legend_below(figure, [axis], [])
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Writes a figure as PNG atomically (a reader never sees a half-written file).

    Args:
        figure: The figure.
        path: Target file.

    Returns:
        ``path``.
    """
    return atomic_write(Path(path), lambda temporary: figure.savefig(temporary, dpi=_DPI))


def write_plots(runs: Sequence[Run], directory: str | Path) -> list[Path]:
    """Writes the accuracy and loss curves and the accuracy-vs-reduction plot of the runs.

    Args:
        runs: The runs, in report order (it fixes their colours).
        directory: Where to write (must exist).

    Returns:
        The files written, in the order accuracy, loss, accuracy vs reduction; a figure without
        data is left out.
    """
    colors = run_colors(runs)
    figures = [
        (ACCURACY_VS_EPOCH, training_curves_figure(runs, "accuracy", colors)),
        (LOSS_VS_EPOCH, training_curves_figure(runs, "loss", colors)),
        (ACCURACY_VS_SPARSITY, reduction_figure(runs, colors)),
    ]
    return [save_figure(figure, Path(directory) / name) for name, figure in figures if figure is not None]


def _reduction(run: Run) -> float | None:
    return (run.report.get("reduction") or {}).get("overall_reduction")


def _run_label(run: Run) -> str:
    """The legend text of a run: its label and its method, in full."""
    return f"{run.label}: {run.report['method']}"


def _round_tags(scalars: dict[str, list[ScalarPoint]], kind: str) -> list[tuple[int, str, str]]:
    wanted = _ROUND_SPLITS[kind]
    found = []
    for tag in scalars:
        match = _ROUND_TAG.match(tag)
        if match and (match["split"], match["metric"]) in wanted:
            found.append((int(match["round"]), match["split"], tag))
    return sorted(found, key=lambda item: (item[0], item[1] != "val"))


def _plot_series(
    axis: Axes,
    points: list[tuple[float, float]],
    scale: float,
    color: str,
    linestyle: Any,
    marker: str,
    label: str,
) -> bool:
    """Draws ``(epoch index, value)`` points at the number of completed epochs (index 0 is epoch 1)."""
    if not points:
        return False
    xs = [epoch + 1 for epoch, _ in points]
    ys = [scale * value for _, value in points]
    axis.plot(
        xs, ys, linestyle=linestyle, color=color, linewidth=2, marker=marker if len(xs) <= 40 else None,
        markersize=4, label=label,
    )  # fmt: skip
    return True


def _mark_pruning(axes: Sequence[Axes], run: Run, color: str) -> bool:
    """Vertical dotted lines (no legend entry of their own) where a run pruned; whether any was drawn."""
    epochs = {
        stage["epoch"]
        for stage in run.report["stages"]
        if stage["name"].endswith("pruned") and isinstance(stage.get("epoch"), int)
    }
    for epoch in epochs:
        for axis in axes:
            axis.axvline(epoch, color=color, linestyle=":", linewidth=1.2, alpha=0.8, label="_pruning step")
    return bool(epochs)


def _legend_below(figure: Figure, axes: Sequence[Axes], extra: list[Line2D]) -> None:
    """One legend for the figure, below the axes, with every labelled line once.

    Long labels are wrapped rather than cut, and the figure grows by the legend's height so the
    axes keep theirs.
    """
    handles: list[Any] = []
    labels: list[str] = []
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    handles += extra
    labels += [str(line.get_label()) for line in extra]
    wrapped = [textwrap.fill(label, _LEGEND_WRAP) for label in labels]
    columns = 1 if max(len(text) for text in labels) > 45 or len(labels) <= 2 else min(3, len(labels))
    rows = [wrapped[start : start + columns] for start in range(0, len(wrapped), columns)]
    text_lines = sum(max(text.count("\n") + 1 for text in row) for row in rows)
    figure.set_figheight(_AXES_HEIGHT + 0.25 * text_lines + 0.3)
    figure.legend(handles, wrapped, loc="outside lower center", ncols=columns, fontsize=_FONT_SIZE - 1)


def _figure(ncols: int, width: float | None = None) -> tuple[Figure, list[Axes]]:
    """A figure with ``ncols`` panels in a row (its height is set when the legend is added)."""
    figure = Figure(figsize=(width or 6.0 * ncols, _AXES_HEIGHT), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for axis in axes:
        axis.tick_params(labelsize=_FONT_SIZE)
        axis.title.set_fontsize(_FONT_SIZE + 2)
        axis.xaxis.label.set_fontsize(_FONT_SIZE + 1)
        axis.yaxis.label.set_fontsize(_FONT_SIZE + 1)
    return figure, list(axes)
