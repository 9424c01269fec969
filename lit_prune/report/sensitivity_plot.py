"""The figure of a sensitivity sweep: one curve per layer, the metric against that layer's sparsity.

The curves of :func:`lit_prune.pruning.sensitivity.sensitivity_sweep` (Han et al., 2015,
"Learning both Weights and Connections for Efficient Neural Networks", Fig. 6; Li et al., 2017,
"Pruning Filters for Efficient ConvNets"). ``callbacks.SensitivityAnalysis`` writes it as
``sensitivity.png`` and logs it to TensorBoard.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from lit_prune.pruning.sensitivity import SensitivityResult

__all__ = ["plot_sensitivity", "sensitivity_figure"]

_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def sensitivity_figure(
    result: SensitivityResult,
    metric_label: str = "validation top-1 accuracy (%)",
    metric_scale: float = 100.0,
    title: str | None = None,
) -> Figure:
    """Draws one curve per layer: metric against that layer's sparsity.

    Each layer has its own colour, line style and marker (20 colours times 4 line styles stay
    distinct well beyond the 16 prunable layers of VGG16-BN); the legend, with each layer's
    weight count, sits outside the axes on the right; the baseline is a grey dashed line.
    The figure is built without pyplot (no global state, any thread), ready for ``savefig``
    or TensorBoard's ``add_figure``.

    Args:
        result: The sensitivity curves.
        metric_label: Y-axis label, with its unit.
        metric_scale: Factor applied to metric values for display (100 turns fractions into %).
        title: Figure title; by default names the metric and the baseline.

    Returns:
        The matplotlib figure.
    """
    if not isinstance(result, SensitivityResult):
        raise TypeError(f"result must be a SensitivityResult, got {type(result).__name__}")
    colors = colormaps["tab20"].colors
    figure = Figure(figsize=(11.0, 6.5), layout="constrained")
    axes = figure.add_subplot()
    for index, (name, points) in enumerate(result.curves.items()):
        axes.plot(
            [100.0 * sparsity for sparsity, _ in points],
            [metric_scale * value for _, value in points],
            color=colors[index % len(colors)],
            linestyle=_LINE_STYLES[(index // len(colors) + index) % len(_LINE_STYLES)],
            marker=_MARKERS[index % len(_MARKERS)],
            markersize=5,
            linewidth=1.6,
            label=f"{name} ({_format_count(result.param_counts[name])})",
        )
    axes.axhline(
        metric_scale * result.baseline, color="0.4", linestyle="--", linewidth=1.0, label="baseline (unpruned)"
    )
    axes.set_xlabel("sparsity of the pruned layer (%)")
    axes.set_ylabel(metric_label)
    axes.set_xlim(0.0, 100.0)
    axes.grid(True, alpha=0.3)
    axes.set_title(
        title
        if title is not None
        else f"Pruning sensitivity per layer, one layer at a time by magnitude "
        f"({result.metric}; baseline {metric_scale * result.baseline:.2f})"
    )
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="layer (weights)")
    return figure


def plot_sensitivity(
    result: SensitivityResult,
    path: str | Path,
    metric_label: str = "validation top-1 accuracy (%)",
    metric_scale: float = 100.0,
    title: str | None = None,
) -> Path:
    """Writes :func:`sensitivity_figure` to ``path`` (PNG by its suffix), creating its folder.

    Args:
        result: The sensitivity curves.
        path: Output file, e.g. ``run_dir / "sensitivity.png"``.
        metric_label: Y-axis label, with its unit.
        metric_scale: Factor applied to metric values for display.
        title: Figure title; by default names the metric and the baseline.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = sensitivity_figure(result, metric_label, metric_scale, title)
    figure.savefig(path, dpi=150, bbox_inches="tight")
    return path


def _format_count(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return str(count)
