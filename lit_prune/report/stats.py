"""Statistics over seeds: runs that differ only in their seed, as mean ± sample standard deviation (n).

A sweep's runs are identified by the values their sweep recorded (``manifest.json`` beside the
run directories); other runs by their saved ``config.yaml``, of which the options that differ
between the given runs become their values (the seed, the logger and the checkpoint path never
count). Runs with equal values form a group. For every metric of the comparison table this
module gives, per group, the mean, the sample standard deviation (``ddof = 1``; none for a
single run) and ``n``, the number of runs in which the metric was measured (a ``null`` in a
report is left out, never counted as 0)::

    mean = sum(x) / n        std = sqrt(sum((x - mean)^2) / (n - 1))

Written files: ``statistics.md`` (a row per group; with a layout also the table of one metric with
one key down and another across, as the seed experiments lay theirs out: sparsity x {one-shot,
iterative}, draw epoch x ratio), ``accuracy_vs_sparsity_mean.png`` (mean test top-1 against
mean sparsity, error bars of one standard deviation both ways) and ``val_top1_vs_epoch_mean.png``
(the mean validation curve of each group with a band of one standard deviation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lit_prune.atomic_files import atomic_write
from lit_prune.errors import UserError
from lit_prune.report.run_report import load_report
from lit_prune.report.schema import REPORT_JSON
from lit_prune.tensorboard_scalars import epoch_series, read_scalars

__all__ = [
    "METRICS",
    "Group",
    "Metric",
    "SeedRun",
    "Statistic",
    "find_runs",
    "group_runs",
    "layout_markdown",
    "load_seed_runs",
    "plot_accuracy_vs_sparsity_mean",
    "plot_curve_mean",
    "statistics_markdown",
    "summarize",
    "write_statistics",
    "write_sweep_report",
]

STATISTICS_MD = "statistics.md"
ACCURACY_VS_SPARSITY_MEAN = "accuracy_vs_sparsity_mean.png"
VAL_TOP1_VS_EPOCH_MEAN = "val_top1_vs_epoch_mean.png"
_MANIFEST = "manifest.json"
_IGNORED_CONFIG_KEYS = ("seed_everything", "trainer.logger", "ckpt_path")
_VAL_TOP1_TAGS = ("val/top1",)


@dataclass(frozen=True)
class Metric:
    """One column of the comparison table.

    Attributes:
        key: Its name (``test_top1``), as ``--metric`` takes it.
        label: Its column heading.
        path: Where it is in ``report.json`` (dotted).
        scale: Factor for display (100 for fractions shown in %).
        digits: Decimals shown.
    """

    key: str
    label: str
    path: str
    scale: float = 1.0
    digits: int = 2


METRICS = (
    Metric("sparsity", "sparsity %", "sparsity.global", 100.0, 2),
    Metric("params_nonzero", "params non-zero", "params.nonzero", 1.0, 0),
    Metric("removed_fraction", "removed %", "reduction.removed_fraction", 100.0, 2),
    Metric("zeroed_fraction", "zeroed %", "reduction.zeroed_fraction", 100.0, 2),
    Metric("overall_reduction", "param. reduction %", "reduction.overall_reduction", 100.0, 2),
    Metric("theoretical_speedup", "theoretical speed-up ×", "reduction.theoretical_speedup", 1.0, 2),
    Metric("size_mb", "size MiB", "profile.size_mb", 1.0, 3),
    Metric("sparse_size_mb", "sparse size MiB", "profile.sparse_size_mb", 1.0, 3),
    Metric("macs", "MMACs", "profile.macs", 1e-6, 2),
    Metric("nonzero_macs", "non-zero MMACs", "profile.nonzero_macs", 1e-6, 2),
    Metric("peak_memory_mb", "peak memory MiB", "profile.peak_memory_mb", 1.0, 1),
    Metric("avg_memory_mb", "avg memory MiB", "profile.avg_memory_mb", 1.0, 1),
    Metric("latency_ms", "latency ms", "profile.latency_ms", 1.0, 2),
    Metric("energy_mj", "energy mJ", "profile.energy_mj", 1.0, 1),
    Metric("test_top1", "top-1 %", "accuracy.test_top1", 100.0, 2),
    Metric("test_top5", "top-5 %", "accuracy.test_top5", 100.0, 2),
    Metric("clean_top1", "clean top-1 % (robustness)", "robustness.clean_top1", 100.0, 2),
    Metric("fgsm_top1", "FGSM top-1 %", "robustness.fgsm_top1", 100.0, 2),
    Metric("pgd_top1", "PGD top-1 %", "robustness.pgd_top1", 100.0, 2),
)
"""The metrics summarised per group (those absent from every report are left out of the table)."""


@dataclass(frozen=True)
class Statistic:
    """Mean, sample standard deviation and count of one metric over a group's runs.

    Attributes:
        mean: The mean, ``None`` when no run measured it.
        std: The sample standard deviation (``n - 1`` in the denominator), ``None`` for n < 2.
        n: How many runs measured it.
    """

    mean: float | None
    std: float | None
    n: int

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``mean ± std (n)``, ``mean (n=1)``, or ``n/a``."""
        if self.mean is None:
            return "n/a"
        mean = f"{self.mean * scale:,.{digits}f}"
        if self.std is None:
            return f"{mean} (n=1)"
        return f"{mean} ± {self.std * scale:,.{digits}f} ({self.n})"


@dataclass(frozen=True)
class SeedRun:
    """A finished run with what identifies it besides its seed.

    Attributes:
        path: The run directory.
        report: Its ``report.json``.
        values: The options that tell it from the other runs (key to value).
        seed: Its seed, when known.
    """

    path: Path
    report: dict[str, Any]
    values: dict[str, Any]
    seed: int | None


@dataclass(frozen=True)
class Group:
    """Runs with equal values (they differ in their seed only).

    Attributes:
        values: Their common values.
        runs: The runs.
    """

    values: dict[str, Any]
    runs: tuple[SeedRun, ...]

    @property
    def label(self) -> str:
        """``key=value, ...`` with short keys, or ``all runs`` when there are no values."""
        if not self.values:
            return "all runs"
        return ", ".join(f"{_short_key(key)}={_text(value)}" for key, value in self.values.items())

    def statistic(self, metric: Metric) -> Statistic:
        """The metric over this group's runs."""
        return summarize([_lookup(run.report, metric.path) for run in self.runs])


def summarize(values: Sequence[float | None]) -> Statistic:
    """Mean, sample standard deviation and n of the measured values (``None`` left out).

    Args:
        values: One value per run.

    Returns:
        The statistic.
    """
    measured = [float(value) for value in values if value is not None]
    n = len(measured)
    if n == 0:
        return Statistic(None, None, 0)
    mean = sum(measured) / n
    if n == 1:
        return Statistic(mean, None, 1)
    variance = sum((value - mean) ** 2 for value in measured) / (n - 1)
    return Statistic(mean, math.sqrt(variance), n)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories: each path that holds a ``report.json``, else every one below it.

    Raises:
        UserError: If a path does not exist or holds no run.
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise UserError(f"{path} is not a directory; give run or sweep directories")
        runs = [path] if (path / REPORT_JSON).is_file() else sorted(p.parent for p in path.rglob(REPORT_JSON))
        if not runs:
            raise UserError(f"{path} holds no run with a {REPORT_JSON}")
        found.extend(run for run in runs if run not in found)
    return found


def load_seed_runs(run_dirs: Sequence[Path]) -> list[SeedRun]:
    """Loads the runs with their values and seeds (from their sweep's manifest, else their configs)."""
    from_manifest: dict[Path, tuple[dict[str, Any], int]] = {}
    configs: dict[Path, dict[str, Any]] = {}
    for run_dir in run_dirs:
        entry = _manifest_entry(run_dir)
        if entry is not None:
            from_manifest[run_dir] = entry
        else:
            configs[run_dir] = _flat_config(run_dir)
    varying = _varying_keys(list(configs.values()))
    runs = []
    for run_dir in run_dirs:
        report = load_report(run_dir)
        if run_dir in from_manifest:
            values, seed = from_manifest[run_dir]
            values = {"sweep": run_dir.parent.name, **values}
        else:
            flat = configs[run_dir]
            values = {key: flat.get(key) for key in varying}
            seed = flat.get("seed_everything")
        runs.append(SeedRun(run_dir, report, values, seed if isinstance(seed, int) else None))
    if len({run.values.get("sweep") for run in runs}) == 1:
        runs = [SeedRun(r.path, r.report, {k: v for k, v in r.values.items() if k != "sweep"}, r.seed) for r in runs]
    return runs


def group_runs(runs: Sequence[SeedRun]) -> list[Group]:
    """Groups runs with equal values, in order of first appearance."""
    groups: dict[str, list[SeedRun]] = {}
    for run in runs:
        groups.setdefault(json.dumps(run.values, sort_keys=True, default=str), []).append(run)
    return [Group(members[0].values, tuple(members)) for members in groups.values()]


def statistics_markdown(groups: Sequence[Group]) -> str:
    """A row per group: its values, its seeds and mean ± std (n) of every metric."""
    metrics = _present_metrics(groups)
    header = "| group | seeds | " + " | ".join(metric.label for metric in metrics) + " |"
    lines = [header, "|---|---|" + "---:|" * len(metrics)]
    for group in groups:
        seeds = ", ".join(str(run.seed) for run in group.runs if run.seed is not None) or "?"
        cells = [group.statistic(metric).format(metric.scale, metric.digits) for metric in metrics]
        lines.append(f"| {group.label} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def layout_markdown(groups: Sequence[Group], rows: str, columns: str, metric_key: str = "test_top1") -> str:
    """The table of one metric: one key's values down, another's across, mean ± std (n) in each cell.

    When further keys vary, one table is written per combination of them.

    Args:
        groups: The groups.
        rows: The key of the rows (a full key, or its last part, e.g. ``draw_epoch``).
        columns: The key of the columns.
        metric_key: The metric in the cells (see :data:`METRICS`).

    Returns:
        Markdown text.

    Raises:
        UserError: If a key matches no value of the groups, or the metric is unknown.
    """
    metric = _metric(metric_key)
    keyed = [group for group in groups if group.values]
    row_key, column_key = _match_key(rows, keyed, "--rows"), _match_key(columns, keyed, "--columns")
    if row_key == column_key:
        raise UserError(f"--rows and --columns name the same key {row_key!r}; give two different keys")
    keyed = [group for group in keyed if row_key in group.values and column_key in group.values]
    others: dict[str, list[Group]] = {}
    for group in keyed:
        rest = {k: v for k, v in group.values.items() if k not in (row_key, column_key)}
        others.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(group)
    blocks = []
    for rest_key, members in others.items():
        rest = json.loads(rest_key)
        row_values = _unique([group.values[row_key] for group in members])
        column_values = _unique([group.values[column_key] for group in members])
        title = f"{metric.label}: {_short_key(row_key)} (rows) × {_short_key(column_key)} (columns)"
        if rest:
            title += " — " + ", ".join(f"{_short_key(k)}={_text(v)}" for k, v in rest.items())
        lines = [f"### {title}", "", f"| {_short_key(row_key)} | " + " | ".join(map(_text, column_values)) + " |"]
        lines.append("|---|" + "---:|" * len(column_values))
        for row_value in row_values:
            cells = []
            for column_value in column_values:
                cell = next(
                    (g for g in members if g.values[row_key] == row_value and g.values[column_key] == column_value),
                    None,
                )
                cells.append("–" if cell is None else cell.statistic(metric).format(metric.scale, metric.digits))
            lines.append(f"| {_text(row_value)} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def plot_accuracy_vs_sparsity_mean(groups: Sequence[Group], path: Path) -> Path | None:
    """Mean test top-1 against mean sparsity per group, with error bars of one std both ways.

    Returns:
        ``path``, or ``None`` when no group has a measured top-1 (nothing is written).
    """
    top1, sparsity = _metric("test_top1"), _metric("sparsity")
    points = [(g, g.statistic(sparsity), g.statistic(top1)) for g in groups]
    points = [(g, x, y) for g, x, y in points if x.mean is not None and y.mean is not None]
    if not points:
        return None
    figure = Figure(figsize=(9, 6), layout="constrained")
    axis = figure.add_subplot()
    for group, x, y in points:
        axis.errorbar(
            100.0 * x.mean,
            100.0 * y.mean,
            xerr=None if x.std is None else 100.0 * x.std,
            yerr=None if y.std is None else 100.0 * y.std,
            marker="o",
            markersize=7,
            capsize=4,
            linestyle="none",
            label=f"{group.label} (n={y.n})",
        )
    axis.set_title("Test top-1 vs sparsity: mean ± one standard deviation over seeds")
    axis.set_xlabel("Sparsity (% of prunable weights removed)")
    axis.set_ylabel("Test top-1 accuracy (%)")
    axis.grid(True, alpha=0.3)
    figure.legend(loc="outside lower center", ncols=min(3, len(points)), fontsize=9)
    return _save(figure, path)


def plot_curve_mean(groups: Sequence[Group], path: Path, tags: Sequence[str] = _VAL_TOP1_TAGS) -> Path | None:
    """The mean validation top-1 per epoch of each group, with a band of one standard deviation.

    At each epoch the statistic is taken over the runs that logged it.

    Returns:
        ``path``, or ``None`` when no run logged the curve (nothing is written).
    """
    figure = Figure(figsize=(10, 6), layout="constrained")
    axis = figure.add_subplot()
    drawn = 0
    for group in groups:
        per_epoch: dict[float, list[float]] = {}
        for run in group.runs:
            scalars = read_scalars(run.path)
            tag = next((t for t in tags if t in scalars), None)
            for epoch, value in epoch_series(scalars, tag) if tag is not None else []:
                per_epoch.setdefault(epoch, []).append(value)
        if not per_epoch:
            continue
        epochs = sorted(per_epoch)
        stats = [summarize(per_epoch[epoch]) for epoch in epochs]
        means = [100.0 * s.mean for s in stats if s.mean is not None]
        spread = [100.0 * (s.std or 0.0) for s in stats]
        (line,) = axis.plot(epochs, means, linewidth=2, label=f"{group.label} (n={len(group.runs)})")
        axis.fill_between(
            epochs,
            [m - s for m, s in zip(means, spread)],
            [m + s for m, s in zip(means, spread)],
            color=line.get_color(),
            alpha=0.2,
        )
        drawn += 1
    if not drawn:
        return None
    axis.set_title("Validation top-1 per epoch: mean (line) ± one standard deviation (band) over seeds")
    axis.set_xlabel("Epoch")
    axis.set_ylabel("Validation top-1 accuracy (%)")
    axis.grid(True, alpha=0.3)
    figure.legend(loc="outside lower center", ncols=min(3, drawn), fontsize=9)
    return _save(figure, path)


def write_statistics(
    run_dirs: Sequence[Path],
    output: Path,
    rows: str | None = None,
    columns: str | None = None,
    metric: str = "test_top1",
) -> list[Path]:
    """Writes ``statistics.md`` and the two mean plots for the given runs.

    Args:
        run_dirs: Run directories (with ``report.json``).
        output: Where to write.
        rows: With ``columns``: the layout's row key.
        columns: The layout's column key.
        metric: The layout's metric.

    Returns:
        The files written, ``statistics.md`` first.

    Raises:
        UserError: If only one of ``rows``/``columns`` is given or a layout key does not match.
    """
    if (rows is None) != (columns is None):
        raise UserError("give both --rows and --columns for a layout table, or neither")
    groups = group_runs(load_seed_runs(run_dirs))
    output.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_accuracy_vs_sparsity_mean(groups, output / ACCURACY_VS_SPARSITY_MEAN),
        plot_curve_mean(groups, output / VAL_TOP1_VS_EPOCH_MEAN),
    ]
    written = [plot for plot in plots if plot is not None]
    parts = ["# Statistics over seeds", "", _EXPLANATION, "", statistics_markdown(groups)]
    if rows is not None and columns is not None:
        parts += ["## Layout", "", layout_markdown(groups, rows, columns, metric)]
    parts += [f"![{plot.stem.replace('_', ' ')}]({plot.name})" for plot in written]
    text = "\n".join(parts) + "\n"
    table = atomic_write(output / STATISTICS_MD, lambda temporary: temporary.write_text(text, encoding="utf-8"))
    return [table, *written]


def write_sweep_report(sweep_dir: Path, layout: Any = None) -> list[Path]:
    """The experiment's table and plots in a sweep directory, over its finished runs.

    Args:
        sweep_dir: The sweep directory.
        layout: The sweep's :class:`~lit_prune.sweep.definition.Layout`, or ``None``.

    Returns:
        The files written (none when no run has finished).
    """
    run_dirs = [path.parent for path in sorted(sweep_dir.glob(f"*/{REPORT_JSON}"))]
    if not run_dirs:
        return []
    if layout is None:
        return write_statistics(run_dirs, sweep_dir)
    return write_statistics(run_dirs, sweep_dir, layout.rows, layout.columns, layout.metric)


_EXPLANATION = (
    "Runs that differ only in their seed form a group. Each cell is mean ± sample standard deviation (n), "
    "n being the runs that measured the metric (a metric a run could not measure is left out, never taken as 0); "
    "a single run shows its value with n=1. Sparsity and accuracy in %, accuracy on the test set."
)


def _manifest_entry(run_dir: Path) -> tuple[dict[str, Any], int] | None:
    manifest = run_dir.parent / _MANIFEST
    if not manifest.is_file():
        return None
    try:
        content = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    for entry in content.get("runs", []):
        if entry.get("name") == run_dir.name:
            values = dict(entry.get("values") or {})
            if entry.get("kind") == "base":
                values = {"stage": "base (dense)"}
            return values, int(entry.get("seed", 0))
    return None


def _flat_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return {}
    flat = _flatten(content, "")
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in _IGNORED_CONFIG_KEYS[1:])}


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """Dotted keys; a list of ``class_path`` entries is keyed by class name (``trainer.callbacks.EarlyBird.ratio``)."""
    if isinstance(value, dict):
        if "class_path" in value and prefix.endswith("callbacks"):
            name = str(value["class_path"]).rsplit(".", 1)[-1]
            return _flatten(value.get("init_args") or {}, f"{prefix}.{name}")
        flat: dict[str, Any] = {}
        for key, item in value.items():
            if key == "init_args":
                flat.update(_flatten(item, prefix))
            else:
                flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value and all(isinstance(item, dict) and "class_path" in item for item in value):
        flat = {}
        for item in value:
            flat.update(_flatten(item, prefix))
        return flat
    return {prefix: value}


def _varying_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    if len(configs) < 2:
        return []
    keys: list[str] = []
    for config in configs:
        keys.extend(key for key in config if key not in keys)
    varying = [key for key in keys if len({json.dumps(c.get(key), default=str) for c in configs}) > 1]
    return [key for key in varying if key != "seed_everything"]


def _match_key(key: str, groups: Sequence[Group], option: str) -> str:
    keys: list[str] = []
    for group in groups:
        keys.extend(k for k in group.values if k not in keys)
    if key in keys:
        return key
    matches = [k for k in keys if k.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"{option} {key!r} matches none of the keys that tell the runs apart: {keys}")
    raise UserError(f"{option} {key!r} is ambiguous: it matches {matches}; give the full key")


def _metric(key: str) -> Metric:
    for metric in METRICS:
        if metric.key == key:
            return metric
    raise UserError(f"unknown metric {key!r}; one of {[m.key for m in METRICS]}")


def _present_metrics(groups: Sequence[Group]) -> list[Metric]:
    return [m for m in METRICS if any(_lookup(run.report, m.path) is not None for g in groups for run in g.runs)]


def _lookup(report: Mapping[str, Any], path: str) -> float | None:
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _unique(values: Sequence[Any]) -> list[Any]:
    unique: list[Any] = []
    for value in values:
        if value not in unique:
            unique.append(value)
    try:
        return sorted(unique)
    except TypeError:
        return unique


def _short_key(key: str) -> str:
    return Path(key).stem if key == "config" else key.rsplit(".", 1)[-1]


def _text(value: Any) -> str:
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    return str(value)


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=150))
