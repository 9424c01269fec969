"""Per-layer pruning sensitivity and the per-layer sparsities it suggests.

A sensitivity sweep prunes one layer at a time by magnitude, at several sparsities, and records
a metric (validation top-1) for each probe, restoring the layer bitwise afterwards (Han et al.,
2015, "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS, Fig. 6;
Li et al., 2017, "Pruning Filters for Efficient ConvNets", ICLR). From the curves,
:func:`allocate_layer_sparsity` chooses a sparsity per layer that reaches a global target
with the least predicted loss, to be applied with
:func:`~lit_prune.pruning.selection.layerwise_prune_mask`::

    params = prunable_parameters(model)
    result = sensitivity_sweep(model, params, evaluate=lambda m: val_top1(m, val_batches))
    allocation = allocate_layer_sparsity(result, target_sparsity=0.8)
    mask = layerwise_prune_mask(magnitude_scores(params), allocation)

The figure of the curves is :mod:`lit_prune.report.sensitivity_plot`. Nothing here imports
Lightning or matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.parameters import check_model_parameters, current_keep_masks
from lit_prune.pruning.selection import layerwise_prune_mask
from lit_prune.validation import check_fraction_levels, check_sparsity

__all__ = [
    "DEFAULT_SENSITIVITY_SPARSITIES",
    "SensitivityResult",
    "allocate_layer_sparsity",
    "predict_metric",
    "sensitivity_sweep",
]

DEFAULT_SENSITIVITY_SPARSITIES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5, 0.7, 0.8, 0.9)
"""Sparsities probed per layer by default."""


@dataclass(frozen=True)
class SensitivityResult:
    """The outcome of a sensitivity sweep; the metric is one where higher is better.

    Args:
        curves: Parameter name to its probes ``(sparsity, metric)``, sparsity ascending,
            measured with only that layer pruned further.
        baseline: The metric of the unmodified model.
        param_counts: Parameter name to its number of weights.
        current_sparsity: Parameter name to the sparsity it already had (an existing mask);
            names left out had none. Probes below it measure the unmodified model.
        metric: Name of the measured quantity, e.g. ``"val_top1"``.

    Raises:
        TypeError: If a field has the wrong type.
        ValueError: If ``curves`` is empty, a curve is empty, unsorted or outside ``[0, 1)``,
            a value is not finite, or the names of the fields disagree.
    """

    curves: dict[str, list[tuple[float, float]]]
    baseline: float
    param_counts: dict[str, int]
    current_sparsity: dict[str, float] = field(default_factory=dict)
    metric: str = "val_top1"

    def __post_init__(self) -> None:
        if not isinstance(self.curves, Mapping) or not self.curves:
            raise ValueError("curves must be a non-empty mapping of parameter name to (sparsity, metric) pairs")
        if not isinstance(self.param_counts, Mapping) or not isinstance(self.current_sparsity, Mapping):
            raise TypeError("param_counts and current_sparsity must be mappings keyed by parameter name")
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"metric must be a non-empty name such as 'val_top1', got {self.metric!r}")
        names = list(self.curves)
        if set(self.param_counts) != set(names):
            raise ValueError(
                f"param_counts must name exactly the layers of curves ({', '.join(names)}), got "
                f"{', '.join(self.param_counts)}"
            )
        unknown = [name for name in self.current_sparsity if name not in self.curves]
        if unknown:
            raise ValueError(f"current_sparsity names layers without a curve: {', '.join(unknown)}")
        curves = {str(name): _check_curve(name, points) for name, points in self.curves.items()}
        counts = {name: _check_param_count(name, self.param_counts[name]) for name in names}
        current = {
            name: check_sparsity(self.current_sparsity.get(name, 0.0), f"current_sparsity[{name!r}]") for name in names
        }
        object.__setattr__(self, "curves", curves)
        object.__setattr__(self, "baseline", _finite(self.baseline, "baseline"))
        object.__setattr__(self, "param_counts", counts)
        object.__setattr__(self, "current_sparsity", current)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict (the layout of ``sensitivity.json``)::

        {"metric": "val_top1", "baseline": 0.93,
         "layers": {"features.0.weight": {"param_count": 1728, "current_sparsity": 0.0,
                                           "curve": [[0.0, 0.93], [0.1, 0.93], ...]}, ...}}
        """
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "layers": {
                name: {
                    "param_count": self.param_counts[name],
                    "current_sparsity": self.current_sparsity[name],
                    "curve": [[sparsity, value] for sparsity, value in points],
                }
                for name, points in self.curves.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SensitivityResult:
        """Rebuilds a result from :meth:`to_dict`'s layout (e.g. a loaded ``sensitivity.json``).

        Args:
            data: The dict.

        Returns:
            The result.

        Raises:
            ValueError: If a key is missing or a value is malformed.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"sensitivity data must be a mapping, got {type(data).__name__}")
        missing = [key for key in ("metric", "baseline", "layers") if key not in data]
        if missing:
            raise ValueError(
                f"sensitivity data lacks {', '.join(map(repr, missing))}; expected keys 'metric', "
                "'baseline' and 'layers' (as written by SensitivityResult.to_dict)"
            )
        layers = data["layers"]
        if not isinstance(layers, Mapping) or not layers:
            raise ValueError("sensitivity data 'layers' must be a non-empty mapping of parameter name to layer data")
        curves: dict[str, list[tuple[float, float]]] = {}
        counts: dict[str, int] = {}
        current: dict[str, float] = {}
        for name, layer in layers.items():
            if not isinstance(layer, Mapping) or not {"param_count", "curve"} <= layer.keys():
                raise ValueError(
                    f"sensitivity data for layer {name!r} must hold 'param_count' and 'curve' "
                    f"(and optionally 'current_sparsity'), got {layer!r}"
                )
            points = layer["curve"]
            if not isinstance(points, Sequence) or any(
                not isinstance(p, Sequence) or isinstance(p, str) or len(p) != 2 for p in points
            ):
                raise ValueError(
                    f"the curve of layer {name!r} must be a list of [sparsity, metric] pairs, got {points!r}"
                )
            curves[name] = [(p[0], p[1]) for p in points]
            counts[name] = layer["param_count"]
            current[name] = layer.get("current_sparsity", 0.0)
        try:
            return cls(curves, data["baseline"], counts, current, data["metric"])
        except TypeError as error:
            raise ValueError(f"malformed sensitivity data: {error}") from error


def sensitivity_sweep(
    model: nn.Module,
    params: Mapping[str, Tensor],
    evaluate: Callable[[nn.Module], float],
    sparsities: Sequence[float] = DEFAULT_SENSITIVITY_SPARSITIES,
    current_mask: PruningMask | None = None,
    metric: str = "val_top1",
    on_probe: Callable[[str, float, float], None] | None = None,
) -> SensitivityResult:
    """Measures how a metric degrades when each layer alone is pruned by magnitude.

    Han et al., 2015, "Learning both Weights and Connections for Efficient Neural Networks"
    (NeurIPS), Fig. 6. For each parameter of ``params`` and each sparsity ``s``, the layer's
    lowest-magnitude weights are set to zero until exactly ``round(s * numel)`` of them are
    (weights pruned by ``current_mask`` stay zero and count, as in
    :func:`~lit_prune.pruning.selection.layerwise_prune_mask`), ``evaluate(model)`` is called,
    and the layer is restored bitwise, also when ``evaluate`` raises. A probe that zeroes no
    weight that is not already zero leaves the model unchanged, so it takes the baseline metric
    instead of calling ``evaluate`` again. The model is expected to carry ``current_mask``
    already (its pruned weights at zero).

    Args:
        model: The network. Its weights are the same bitwise after the sweep, and every
            module's train/eval flag is restored.
        params: The layers to probe (e.g. ``prunable_parameters(model)``).
        evaluate: Returns the metric of the model as it is, higher = better (e.g. validation
            top-1 on a fixed set of batches, in eval mode). Called once for the baseline and
            once per probe that changes the model.
        sparsities: Sparsities to probe, each in ``[0, 1)``; sorted ascending in the result.
        current_mask: The mask so far; its pruned weights stay pruned in every probe.
        metric: Name of the metric, stored in the result.
        on_probe: Called as ``on_probe(name, sparsity, value)`` after each probe (for logging).

    Returns:
        The curves, the baseline, the parameter counts and the current sparsity per layer.

    Raises:
        TypeError: If an argument has the wrong type or ``evaluate`` returns no number.
        ValueError: If ``sparsities`` is empty, repeats a value or holds one outside ``[0, 1)``,
            ``params`` is not parameters of ``model``, ``current_mask`` does not fit, or
            ``evaluate`` returns a value that is not finite.
    """
    named = check_model_parameters(model, params)
    levels = check_fraction_levels(sparsities, "sparsities", DEFAULT_SENSITIVITY_SPARSITIES)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be callable as evaluate(model) -> float, got {type(evaluate).__name__}")
    if not isinstance(metric, str) or not metric:
        raise TypeError(f"metric must be a non-empty name such as 'val_top1', got {metric!r}")
    if on_probe is not None and not callable(on_probe):
        raise TypeError(f"on_probe must be callable as on_probe(name, sparsity, value) or None, got {on_probe!r}")
    keep = current_keep_masks(named, current_mask)
    flags = [(module, module.training) for module in model.modules()]
    try:
        baseline = _metric_value(evaluate(model), "the baseline")
        curves: dict[str, list[tuple[float, float]]] = {}
        for name, param in named.items():
            curves[name] = _probe_layer(model, name, param, keep[name], levels, evaluate, baseline, on_probe)
    finally:
        for module, flag in flags:
            module.training = flag
    return SensitivityResult(
        curves=curves,
        baseline=baseline,
        param_counts={name: param.numel() for name, param in named.items()},
        current_sparsity={
            name: 1.0 - int(kept.count_nonzero()) / kept.numel() for name, kept in keep.items() if kept is not None
        },
        metric=metric,
    )


def allocate_layer_sparsity(
    result: SensitivityResult,
    target_sparsity: float,
    param_counts: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """Chooses a sparsity per layer that reaches a global target with the least predicted loss.

    The predicted loss of layer ``l`` at sparsity ``s`` is ``baseline - m_l(s)``, where
    ``m_l`` interpolates the layer's sensitivity curve linearly (the unmodified model at
    sparsity 0 when the curve does not start there), and losses of different layers are
    assumed to add up, as in sensitivity-based allocation since Han et al. (2015). The problem
    ``minimise Σ_l loss_l(s_l)  subject to  Σ_l n_l s_l = target · Σ_l n_l`` is a knapsack
    over pruned weights, solved by its Lagrangian relaxation: each loss curve, as a function
    of the number of pruned weights, is replaced by its lower convex envelope, and segments
    are filled cheapest first (least predicted loss per pruned weight, across all layers),
    which is the same as raising a price per pruned weight until the layers whose marginal
    loss is below it have pruned enough. When every loss curve is convex (accuracy falling
    ever faster with sparsity, the usual shape) this is exactly optimal. Otherwise (noisy or
    concave measurements) it is optimal for the envelopes; all layers but at most one end on
    an envelope vertex, which lies on the measured curve, and that one layer may lose up to
    its envelope's gap more than predicted. The weight counts are then made integral so
    that exactly ``round(target · Σ n_l)`` weights are pruned when the result is applied with
    :func:`~lit_prune.pruning.selection.layerwise_prune_mask` (each layer's fraction times
    its size is a whole number).

    A layer never goes below the sparsity it already has (``result.current_sparsity``: masks
    only shrink) nor beyond the highest sparsity its curve measured (no extrapolation).

    Args:
        result: The sensitivity curves (higher metric = better).
        target_sparsity: The fraction of all weights of the curves' layers to prune, in ``[0, 1)``.
        param_counts: Weights per layer; defaults to ``result.param_counts``.

    Returns:
        Parameter name (in ``result.curves`` order) to its sparsity, usable as the
        ``sparsity`` mapping of ``layerwise_prune_mask``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``target_sparsity`` is outside ``[0, 1)``, below the sparsity the layers
            already have, or above what the probed sparsities allow; or if ``param_counts``
            names other layers.
    """
    if not isinstance(result, SensitivityResult):
        raise TypeError(f"result must be a SensitivityResult, got {type(result).__name__}")
    target = check_sparsity(target_sparsity, "target_sparsity")
    counts = result.param_counts if param_counts is None else _check_counts(result, param_counts)
    names = list(result.curves)
    want = round(target * sum(counts.values()))
    lower = {name: round(result.current_sparsity[name] * counts[name]) for name in names}
    upper = {name: max(lower[name], math.floor(result.curves[name][-1][0] * counts[name] + 1e-9)) for name in names}
    if want < sum(lower.values()):
        raise ValueError(
            f"target_sparsity {target} is below the sparsity the layers already have "
            f"({sum(lower.values()) / sum(counts.values()):.6f}); pruned weights are never revived"
        )
    if want > sum(upper.values()):
        raise ValueError(
            f"target_sparsity {target} cannot be reached within the probed sparsities: at most "
            f"{sum(upper.values()) / sum(counts.values()):.6f} with every layer at its highest probed "
            "sparsity; probe higher sparsities in the sweep"
        )
    segments: list[tuple[float, int, int, str, float]] = []
    for index, name in enumerate(names):
        points = _loss_points(result, name, counts[name], lower[name], upper[name])
        envelope = _lower_convex_envelope(points)
        for position, ((x0, y0), (x1, y1)) in enumerate(pairwise(envelope)):
            segments.append(((y1 - y0) / (x1 - x0), index, position, name, x1 - x0))
    segments.sort(key=lambda segment: segment[:3])
    pruned = {name: float(lower[name]) for name in names}
    budget = float(want - sum(lower.values()))
    for _, _, _, name, width in segments:
        if budget <= 0:
            break
        take = min(width, budget)
        pruned[name] += take
        budget -= take
    whole = _whole_counts(pruned, lower, upper, want, names)
    return {name: whole[name] / counts[name] for name in names}


def predict_metric(result: SensitivityResult, layer_sparsity: Mapping[str, float]) -> float:
    """Predicts the metric after pruning several layers, adding up their measured losses.

    ``baseline - Σ_l (baseline - m_l(s_l))`` with ``m_l`` the linear interpolation of layer
    ``l``'s curve: the objective that :func:`allocate_layer_sparsity` minimises. Layers not
    named are taken as unpruned.

    Args:
        result: The sensitivity curves.
        layer_sparsity: Parameter name to sparsity, within each layer's probed range.

    Returns:
        The predicted metric.

    Raises:
        ValueError: If a name has no curve or a sparsity is outside ``[0, highest probed]``.
    """
    if not isinstance(result, SensitivityResult):
        raise TypeError(f"result must be a SensitivityResult, got {type(result).__name__}")
    if not isinstance(layer_sparsity, Mapping):
        raise TypeError(f"layer_sparsity must be a mapping of parameter name to sparsity, got {layer_sparsity!r}")
    total_loss = 0.0
    for name, sparsity in layer_sparsity.items():
        if name not in result.curves:
            raise ValueError(f"no sensitivity curve for {name!r}; layers are: {', '.join(result.curves)}")
        sparsity = check_sparsity(sparsity, f"layer_sparsity[{name!r}]")
        highest = result.curves[name][-1][0]
        if sparsity > highest + 1e-12:
            raise ValueError(
                f"layer_sparsity[{name!r}] = {sparsity} is beyond the highest probed sparsity {highest}; "
                "the curve is not extrapolated"
            )
        xs, ys = _curve_with_origin(result, name)
        total_loss += result.baseline - _interpolate(xs, ys, sparsity)
    return result.baseline - total_loss


def _probe_layer(
    model: nn.Module,
    name: str,
    param: nn.Parameter,
    keep: Tensor | None,
    levels: list[float],
    evaluate: Callable[[nn.Module], float],
    baseline: float,
    on_probe: Callable[[str, float, float], None] | None,
) -> list[tuple[float, float]]:
    scores = {name: param.detach().abs()}
    current = None if keep is None else PruningMask({name: keep})
    original = param.detach().clone()
    points: list[tuple[float, float]] = []
    for sparsity in levels:
        pruned = ~layerwise_prune_mask(scores, sparsity, current)[name]
        if not bool((original[pruned] != 0).any()):
            value = baseline
        else:
            try:
                with torch.no_grad():
                    param.masked_fill_(pruned, 0)
                value = _metric_value(evaluate(model), f"layer {name!r} at sparsity {sparsity}")
            finally:
                with torch.no_grad():
                    param.copy_(original)
        points.append((sparsity, value))
        if on_probe is not None:
            on_probe(name, sparsity, value)
    return points


def _loss_points(result: SensitivityResult, name: str, count: int, lower: int, upper: int) -> list[tuple[float, float]]:
    """The layer's loss curve over pruned-weight counts ``[lower, upper]``, interpolated at the ends."""
    if lower == upper:
        return []
    xs, ys = _curve_with_origin(result, name)
    counts = [sparsity * count for sparsity in xs]
    losses = [result.baseline - value for value in ys]
    inner = [(x, y) for x, y in zip(counts, losses) if lower < x < upper]
    start = (float(lower), _interpolate(counts, losses, lower))
    end = (float(upper), _interpolate(counts, losses, upper))
    return [start, *inner, end]


def _lower_convex_envelope(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Lower convex hull of points sorted by x (Andrew's monotone chain)."""
    hull: list[tuple[float, float]] = []
    for point in points:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], point) <= 0:
            hull.pop()
        hull.append(point)
    return hull


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _whole_counts(
    pruned: dict[str, float], lower: dict[str, int], upper: dict[str, int], want: int, names: list[str]
) -> dict[str, int]:
    """Rounds per-layer pruned counts to integers summing to ``want`` (largest remainders first)."""
    whole = {name: min(max(math.floor(pruned[name] + 1e-9), lower[name]), upper[name]) for name in names}
    remainder = {name: pruned[name] - whole[name] for name in names}
    while sum(whole.values()) < want:
        name = max((n for n in names if whole[n] < upper[n]), key=lambda n: remainder[n])
        whole[name] += 1
        remainder[name] -= 1.0
    while sum(whole.values()) > want:
        name = min((n for n in names if whole[n] > lower[n]), key=lambda n: remainder[n])
        whole[name] -= 1
        remainder[name] += 1.0
    return whole


def _curve_with_origin(result: SensitivityResult, name: str) -> tuple[list[float], list[float]]:
    """The curve's sparsities and values, starting at sparsity 0 (the baseline) if it does not."""
    points = result.curves[name]
    if points[0][0] > 0.0:
        points = [(0.0, result.baseline), *points]
    return [p[0] for p in points], [p[1] for p in points]


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear interpolation on ascending ``xs`` (clamped at the ends)."""
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in pairwise(zip(xs, ys)):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def _check_curve(name: str, points: object) -> list[tuple[float, float]]:
    if isinstance(points, (str, bytes)) or not isinstance(points, Sequence) or not points:
        raise ValueError(f"the curve of {name!r} must be a non-empty list of (sparsity, metric) pairs, got {points!r}")
    curve: list[tuple[float, float]] = []
    for point in points:
        if isinstance(point, (str, bytes)) or not isinstance(point, Sequence) or len(point) != 2:
            raise ValueError(f"the curve of {name!r} must hold (sparsity, metric) pairs, got {point!r}")
        sparsity = check_sparsity(point[0], f"a sparsity in the curve of {name!r}")
        curve.append((sparsity, _finite(point[1], f"a metric in the curve of {name!r}")))
    if any(b[0] <= a[0] for a, b in pairwise(curve)):
        raise ValueError(f"the curve of {name!r} must have strictly increasing sparsities, got {[p[0] for p in curve]}")
    return curve


def _check_param_count(name: str, count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"param_counts[{name!r}] must be an int, got {count!r}")
    if count < 1:
        raise ValueError(f"param_counts[{name!r}] must be >= 1, got {count}")
    return count


def _check_counts(result: SensitivityResult, param_counts: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(param_counts, Mapping):
        raise TypeError(f"param_counts must be a mapping of parameter name to int, got {type(param_counts).__name__}")
    if set(param_counts) != set(result.curves):
        raise ValueError(
            f"param_counts must name exactly the layers of the result ({', '.join(result.curves)}), got "
            f"{', '.join(param_counts)}"
        )
    return {name: _check_param_count(name, param_counts[name]) for name in result.curves}


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value}")
    return float(value)


def _metric_value(value: object, what: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise TypeError(
                f"evaluate must return one number; for {what} it returned a tensor of shape {tuple(value.shape)}"
            )
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"evaluate must return a number (higher = better); for {what} it returned {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"evaluate returned {value} for {what}; the metric must be finite")
    return float(value)
