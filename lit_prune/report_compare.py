"""``lit-prune report RUN_DIR [RUN_DIR ...]``: one table and three plots comparing finished runs.

Each run directory must hold the ``report.json`` that ``callbacks.profiling.ProfilingCallback``
writes. The command writes into ``--output`` (the current directory by default):

* ``comparison.md``: a row per run (model, dataset, method, sparsity, parameters, size, MACs,
  memory, latency, energy, top-1, top-5) and the change against the dense baseline;
* ``accuracy_vs_epoch.png`` and ``loss_vs_epoch.png``: validation and training curves of every
  run (and every lottery-ticket round logged as ``lth/round_<r>/...``), read from the run's
  TensorBoard event files;
* ``accuracy_vs_sparsity.png``: test top-1 against sparsity across runs, with the pruning stages
  each run recorded (validation top-1).

The dense baseline of a run is the first run given with the same model and dataset whose method
is ``"dense"``. Without one, accuracy is compared with the run's own ``baseline`` stage
(validation accuracy before pruning) and size/MACs with the run's own dense numbers; such deltas
are marked with a dagger.
"""

from __future__ import annotations

import argparse
import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import cycle
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from lit_prune.report import REPORT_JSON, format_macs, format_number, format_percent, load_report
from lit_prune.tensorboard_scalars import ScalarPoint, epoch_series, read_scalars

__all__ = [
    "ACCURACY_VS_EPOCH",
    "ACCURACY_VS_SPARSITY",
    "COMPARISON_MD",
    "LOSS_VS_EPOCH",
    "Run",
    "compare_runs",
    "comparison_markdown",
    "expand_run_dirs",
    "find_baseline",
    "load_runs",
    "main",
    "plot_accuracy_vs_sparsity",
    "plot_training_curves",
]

COMPARISON_MD = "comparison.md"
ACCURACY_VS_EPOCH = "accuracy_vs_epoch.png"
LOSS_VS_EPOCH = "loss_vs_epoch.png"
ACCURACY_VS_SPARSITY = "accuracy_vs_sparsity.png"

_GLOB_CHARACTERS = re.compile(r"[*?\[]")
_PERCENTAGE = re.compile(r"\s*\b\d+(?:\.\d+)?\s*%")
_ROUND_TAG = re.compile(r"^lth/round_(?P<round>\d+)/(?P<split>val|train)[_/](?P<metric>top1|loss)(?:_epoch)?$")
_PANELS = {
    "accuracy": (
        ("Validation top-1 accuracy", "val", "top1", ("val/top1",)),
        ("Training top-1 accuracy", "train", "top1", ("train/top1_epoch", "train/top1")),
    ),
    "loss": (
        ("Validation loss", "val", "loss", ("val/loss", "val/loss_epoch")),
        ("Training loss (epoch mean)", "train", "loss", ("train/loss_epoch", "train/loss")),
    ),
}
_FONT_SIZE = 11
_DPI = 150


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
        ValueError: If ``patterns`` is empty, a pattern matches no directory, or no matched
            directory holds a report.
    """
    if not patterns:
        raise ValueError("give at least one run directory, e.g. lit-prune report lightning_logs/quickstart/version_0")
    found: list[Path] = []
    for pattern in patterns:
        if _GLOB_CHARACTERS.search(pattern):
            matches = [Path(match) for match in sorted(glob.glob(pattern)) if Path(match).is_dir()]
            if not matches:
                raise ValueError(
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
        raise ValueError(f"none of {list(patterns)} holds a run with a {REPORT_JSON}")
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


def comparison_markdown(runs: Sequence[Run], plots: Sequence[Path] = ()) -> str:
    """Renders the comparison table of the runs.

    Args:
        runs: The runs, one row each, in order.
        plots: Plot files to show below the table (linked by file name).

    Returns:
        Markdown text.
    """
    header = (
        "| run | model | dataset | method | sparsity | params non-zero | size MiB dense / sparse "
        "| MACs dense / non-zero | memory MiB peak / avg | latency ms | energy mJ | top-1 | top-5 "
        "| Δ top-1 | Δ size | Δ MACs | Δ latency |"
    )
    lines = ["# Run comparison", "", header, "|" + "---|" * 4 + "---:|" * 13]
    footnotes: set[str] = set()
    for run in runs:
        report, profile, accuracy = run.report, run.report["profile"], run.report["accuracy"]
        deltas, notes = _deltas(run, find_baseline(run, runs))
        footnotes.update(notes)
        lines.append(
            "| "
            + " | ".join(
                [
                    run.label,
                    report["model"],
                    report["dataset"],
                    report["method"],
                    format_percent(report["sparsity"]["global"]),
                    f"{report['params']['nonzero']:,} / {report['params']['total']:,}",
                    f"{format_number(profile['size_mb'], 3)} / {format_number(profile['sparse_size_mb'], 3)}",
                    f"{format_macs(profile['macs'])} / {format_macs(profile['nonzero_macs'])}",
                    f"{format_number(profile['peak_memory_mb'], 1)} / {format_number(profile['avg_memory_mb'], 1)}",
                    format_number(profile["latency_ms"], 2),
                    format_number(profile["energy_mj"], 1),
                    format_percent(accuracy["test_top1"]),
                    format_percent(accuracy["test_top5"]),
                    *deltas,
                ]
            )
            + " |"
        )
    lines += [
        "",
        "Sparsity is the fraction of masked weights that are pruned (without a mask: of conv/linear weights that "
        "are zero). Size is the serialised state dict (sparse: pruned tensors stored as COO/CSR when smaller). "
        "MACs are per image; latency, memory and energy per batch (see each run's report.md for device and "
        "batch size). Accuracy is on the test set. Δ is against the dense run of the same model and dataset: "
        "top-1 in percentage points, size (sparse size vs dense size), MACs (non-zero vs dense) and latency as "
        "relative change. n/a: not measured (the run's report.md says why).",
    ]
    lines += [f"{note}" for note in sorted(footnotes)]
    lines += ["", "## Run directories", ""]
    lines += [f"- {run.label}: `{run.path}`" for run in runs]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{path.stem.replace('_', ' ')}]({path.name})" for path in plots]
    return "\n".join(lines) + "\n"


def plot_training_curves(runs: Sequence[Run], path: str | Path, kind: str) -> Path | None:
    """Plots validation and training curves of every run (and lottery-ticket round) against epoch.

    Args:
        runs: The runs; their TensorBoard event files are read.
        path: Where to save the PNG.
        kind: ``"accuracy"`` (top-1, in %) or ``"loss"``.

    Returns:
        ``path``, or ``None`` when no run logged any of the curves (nothing is written).

    Raises:
        ValueError: If ``kind`` is not ``"accuracy"`` or ``"loss"``.
    """
    if kind not in _PANELS:
        raise ValueError(f"kind must be one of {sorted(_PANELS)}, got {kind!r}")
    scale = 100.0 if kind == "accuracy" else 1.0
    figure, axes = _figure(ncols=2, figsize=(13, 5.5))
    colors = _colors(len(runs))
    plotted = [False] * len(axes)
    pruned = False
    for run in runs:
        scalars = read_scalars(run.path)
        color = next(colors)
        for index, (axis, (_, split, metric, tags)) in enumerate(zip(axes, _PANELS[kind])):
            tag = next((t for t in tags if t in scalars), None)
            if tag is not None:
                plotted[index] |= _plot_series(axis, epoch_series(scalars, tag), scale, color, "-", run.label)
            for round_index, round_tag in _round_tags(scalars, split, metric):
                label = f"{run.label} · round {round_index}"
                series = epoch_series(scalars, round_tag)
                plotted[index] |= _plot_series(axis, series, scale, next(colors), "--", label)
        pruned |= _mark_pruning(axes, run, color)
    if not any(plotted):
        return None
    unit = "Top-1 accuracy (%)" if kind == "accuracy" else "Cross-entropy loss"
    for axis, has_data, (title, _, _, _) in zip(axes, plotted, _PANELS[kind]):
        axis.set_title(title)
        axis.set_xlabel("Epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(unit)
        axis.grid(True, alpha=0.3)
        if not has_data:
            axis.text(0.5, 0.5, "not logged by any run", ha="center", va="center", transform=axis.transAxes)
    handles, labels = _legend_entries(axes)
    if pruned:
        handles.append(Line2D([], [], color="grey", linestyle=":", label="pruning step"))
        labels.append("pruning step")
    figure.suptitle(f"{'Accuracy' if kind == 'accuracy' else 'Loss'} per epoch", fontsize=_FONT_SIZE + 3)
    figure.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=_FONT_SIZE - 1)
    return _save(figure, path)


def plot_accuracy_vs_sparsity(runs: Sequence[Run], path: str | Path) -> Path | None:
    """Plots test top-1 against sparsity across runs, with each run's recorded pruning stages.

    Runs of the same model, dataset and method family (the method without its percentages) are
    joined by a line in order of sparsity, starting from their dense baseline when there is one.
    Stages (baseline, pruned, rounds, fine-tuned) are hollow markers at their validation top-1.

    Args:
        runs: The runs.
        path: Where to save the PNG.

    Returns:
        ``path``, or ``None`` when no run has a test top-1 (nothing is written).
    """
    points = [run for run in runs if run.report["accuracy"]["test_top1"] is not None]
    if not points:
        return None
    figure, (axis,) = _figure(ncols=1, figsize=(9, 6))
    families: dict[tuple[str, str, str], list[Run]] = {}
    for run in points:
        if run.report["method"] != "dense":
            families.setdefault(_family(run.report), []).append(run)
    colors = _colors(len(families) + 1)
    for key, members in families.items():
        baseline = find_baseline(members[0], points)
        line = sorted(([baseline] if baseline else []) + members, key=lambda r: r.report["sparsity"]["global"])
        color = next(colors)
        axis.plot(
            [100.0 * r.report["sparsity"]["global"] for r in line],
            [100.0 * r.report["accuracy"]["test_top1"] for r in line],
            marker="o",
            markersize=7,
            linewidth=2,
            color=color,
            label=f"{key[0]} on {key[1]}: {key[2]} (test)",
        )
        for run in members:
            _plot_stages(axis, run, color)
    dense = [run for run in points if run.report["method"] == "dense"]
    if dense:
        axis.scatter(
            [100.0 * r.report["sparsity"]["global"] for r in dense],
            [100.0 * r.report["accuracy"]["test_top1"] for r in dense],
            marker="*",
            s=220,
            color="black",
            zorder=5,
            label="dense baseline (test)",
        )
    if any(run.report["stages"] for run in points):
        axis.plot(
            [], [], linestyle=":", marker="o", markerfacecolor="none", color="grey", label="pruning stages (validation)"
        )
    axis.set_title("Top-1 accuracy vs sparsity")
    axis.set_xlabel("Sparsity (% of prunable weights removed)")
    axis.set_ylabel("Top-1 accuracy (%)")
    axis.set_xlim(-2, 102)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="best", fontsize=_FONT_SIZE - 1)
    return _save(figure, path)


def compare_runs(patterns: Sequence[str], output_dir: str | Path = ".") -> list[Path]:
    """Writes the comparison table and the plots of the given runs.

    Args:
        patterns: Run directories or glob patterns.
        output_dir: Directory to write into (created if missing).

    Returns:
        The paths written: ``comparison.md`` first, then the plots that had data.

    Raises:
        FileNotFoundError: If a run directory or its ``report.json`` is missing.
        ValueError: If a pattern matches nothing or a report is malformed.
    """
    runs = load_runs(patterns)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_training_curves(runs, output / ACCURACY_VS_EPOCH, "accuracy"),
        plot_training_curves(runs, output / LOSS_VS_EPOCH, "loss"),
        plot_accuracy_vs_sparsity(runs, output / ACCURACY_VS_SPARSITY),
    ]
    written = [plot for plot in plots if plot is not None]
    table = output / COMPARISON_MD
    table.write_text(comparison_markdown(runs, written), encoding="utf-8")
    return [table, *written]


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Runs ``lit-prune report`` with command-line arguments.

    Args:
        argv: The arguments after ``report``.

    Returns:
        The paths written.
    """
    parser = argparse.ArgumentParser(
        prog="lit-prune report",
        description="Compare finished runs: a markdown table and plots from their report.json and TensorBoard logs.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories or glob patterns")
    parser.add_argument(
        "--output", "-o", default=".", metavar="DIR", help="where to write (default: the current directory)"
    )
    args = parser.parse_args(argv)
    try:
        written = compare_runs(args.run_dirs, args.output)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    for path in written:
        print(f"lit-prune report: wrote {path}")
    return written


def _runs_in(directory: Path) -> list[Path]:
    """The directory itself if it holds a report, else every directory below it that does."""
    if (directory / REPORT_JSON).is_file():
        return [directory]
    return sorted(path.parent for path in directory.rglob(REPORT_JSON))


def _deltas(run: Run, baseline: Run | None) -> tuple[list[str], set[str]]:
    """Δ top-1, Δ size, Δ MACs, Δ latency of a run, and the footnotes they need."""
    if baseline is run:
        return ["baseline"] * 4, set()
    report, profile = run.report, run.report["profile"]
    if baseline is None:
        own = next((s for s in report["stages"] if s["name"] == "baseline"), {})
        dagger = "†"
        note = {
            "† no dense run of this model and dataset was given: Δ top-1 is against the run's own baseline "
            "stage (validation accuracy before pruning), Δ size and Δ MACs against its own dense numbers."
        }
        return [
            _points(report["accuracy"]["test_top1"], own.get("val_top1"), dagger),
            _relative(profile["sparse_size_mb"], profile["size_mb"], dagger),
            _relative(profile["nonzero_macs"], profile["macs"], dagger),
            "n/a",
        ], note
    base = baseline.report["profile"]
    same_device = profile["device"] == base["device"] and profile["batch_size"] == base["batch_size"]
    notes = set() if same_device else {"‡ latency measured on another device or batch size than the dense run."}
    return [
        _points(report["accuracy"]["test_top1"], baseline.report["accuracy"]["test_top1"]),
        _relative(profile["sparse_size_mb"], base["size_mb"]),
        _relative(profile["nonzero_macs"], base["macs"]),
        _relative(profile["latency_ms"], base["latency_ms"]) if same_device else "n/a ‡",
    ], notes


def _family(report: dict[str, Any]) -> tuple[str, str, str]:
    method = _PERCENTAGE.sub("", report["method"]).strip() or report["method"]
    return report["model"], report["dataset"], method


def _round_tags(scalars: dict[str, list[ScalarPoint]], split: str, metric: str) -> list[tuple[int, str]]:
    found = []
    for tag in scalars:
        match = _ROUND_TAG.match(tag)
        if match and match["split"] == split and match["metric"] == metric:
            found.append((int(match["round"]), tag))
    return sorted(found)


def _plot_series(
    axis: Axes, points: list[tuple[float, float]], scale: float, color: Any, style: str, label: str
) -> bool:
    if not points:
        return False
    xs = [epoch + 1 for epoch, _ in points]
    ys = [scale * value for _, value in points]
    marker = "o" if len(xs) <= 40 else None
    axis.plot(xs, ys, linestyle=style, color=color, linewidth=2, marker=marker, markersize=4, label=label)
    return True


def _mark_pruning(axes: Sequence[Axes], run: Run, color: Any) -> bool:
    """Draws vertical dotted lines where a run pruned (after ``epoch`` completed epochs).

    Returns:
        Whether any line was drawn.
    """
    epochs = {
        stage["epoch"]
        for stage in run.report["stages"]
        if stage["name"].endswith("pruned") and isinstance(stage.get("epoch"), int)
    }
    for epoch in epochs:
        for axis in axes:
            axis.axvline(epoch, color=color, linestyle=":", linewidth=1.2, alpha=0.8, label="pruning step")
    return bool(epochs)


def _plot_stages(axis: Axes, run: Run, color: Any) -> None:
    """Hollow markers along a run's stages; a stage without sparsity came before any mask (0 %)."""
    stages = [s for s in run.report["stages"] if s.get("val_top1") is not None]
    if stages:
        axis.plot(
            [100.0 * (s.get("sparsity") or 0.0) for s in stages],
            [100.0 * s["val_top1"] for s in stages],
            linestyle=":",
            marker="o",
            markersize=6,
            markerfacecolor="none",
            color=color,
            alpha=0.8,
        )


def _legend_entries(axes: Sequence[Axes]) -> tuple[list[Any], list[str]]:
    handles: list[Any] = []
    labels: list[str] = []
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels and label != "pruning step":
                handles.append(handle)
                labels.append(label)
    return handles, labels


def _figure(ncols: int, figsize: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for axis in axes:
        axis.tick_params(labelsize=_FONT_SIZE)
        axis.title.set_fontsize(_FONT_SIZE + 2)
        axis.xaxis.label.set_fontsize(_FONT_SIZE + 1)
        axis.yaxis.label.set_fontsize(_FONT_SIZE + 1)
    return figure, list(axes)


def _colors(count: int) -> Any:
    palette = colormaps["tab10" if count <= 10 else "tab20"]
    return cycle(palette.colors)


def _save(figure: Figure, path: str | Path) -> Path:
    target = Path(path)
    figure.savefig(target, dpi=_DPI)
    return target


def _points(value: float | None, reference: float | None, mark: str = "") -> str:
    if value is None or reference is None:
        return "n/a"
    return f"{100.0 * (value - reference):+.2f} pp{mark}"


def _relative(value: float | None, reference: float | None, mark: str = "") -> str:
    if value is None or not reference:
        return "n/a"
    return f"{100.0 * (value / reference - 1.0):+.1f} %{mark}"
