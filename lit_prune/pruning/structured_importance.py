"""Scoring structured units by a registered score, and the choice of which to remove.

:func:`structured_importance` scores every unit of each
:class:`~lit_prune.pruning.channel_groups.StructuredGroup` with a score of kind ``groups`` from
:mod:`lit_prune.pruning.score_registry` (``l1``, ``l2``, ``bn_scale``, ``taylor`` in
:mod:`lit_prune.pruning.group_scores`, ``fpgm`` in :mod:`lit_prune.pruning.fpgm`, or a user's
own); higher means more important.

Selection removes the lowest-scoring units. ``scope="global"`` ranks all units of all groups
together (``normalize=True`` first divides each group's scores by their mean, so groups of
different scale compete on relative importance; ``False``, the default, is network slimming's
single global threshold); ``scope="layer"`` removes the same fraction from every group. A cap,
``max_group_fraction`` (default 0.9), bounds what any one group loses, and every group keeps at
least one unit. :func:`select_channels` targets a fraction of units;
:func:`select_channels_for_removed_fraction` targets a fraction of the model's *parameters*.
Ties are broken by position (earlier group, then lower index, goes first).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.pruning.channel_groups import StructuredGroup
from lit_prune.pruning.group_scores import check_groups
from lit_prune.pruning.score_registry import get_score
from lit_prune.pruning.selection import SCOPES
from lit_prune.validation import check_choice, check_fraction

_EVERYTHING = "1 would remove everything"

__all__ = [
    "removed_parameter_fraction",
    "select_channels",
    "select_channels_for_removed_fraction",
    "structured_importance",
]


def structured_importance(
    model: nn.Module, groups: Mapping[str, StructuredGroup], score: str = "l1", **inputs: Any
) -> dict[str, Tensor]:
    """Scores every unit of ``groups`` with a registered score of kind ``groups`` (higher = keep).

    Args:
        model: The network the groups were built from, at its current widths.
        groups: Group name to group, e.g. from
            :func:`~lit_prune.pruning.channel_groups.prunable_groups`.
        score: A name from ``list_scores("groups")`` or an import path of a registered score.
        **inputs: What the score needs (``batches`` for ``taylor``) and its options.

    Returns:
        Group name to a 1-D float32 tensor of ``group.size`` scores, detached, on the device
        of the group's parameters.

    Raises:
        UserError: If ``score`` is unknown or not of kind ``groups``, or a need is missing.
        TypeError: If ``groups`` is not a mapping of groups.
        ValueError: If ``bn_scale`` is asked of a group without a batch norm, or a group no
            longer matches the model's widths.
    """
    check_groups(groups)
    return get_score(score, kind="groups")(model=model, groups=groups, **inputs)


def select_channels(
    scores: Mapping[str, Tensor],
    channel_fraction: float,
    scope: str = "global",
    normalize: bool = False,
    max_group_fraction: float = 0.9,
) -> dict[str, list[int]]:
    """Chooses the units to keep so that a fraction ``channel_fraction`` of all units is removed.

    With ``scope="global"`` exactly ``round(channel_fraction * total units)`` units go, the lowest-scoring
    ones among those the cap allows. With ``scope="layer"`` each group loses
    ``round(channel_fraction * size)`` units, clipped by the cap and the keep-one rule.

    Args:
        scores: Group name to 1-D unit scores (e.g. from :func:`structured_importance`).
        channel_fraction: Fraction of units to remove, in ``[0, 1)``.
        scope: One of :data:`~lit_prune.pruning.selection.SCOPES`.
        normalize: For ``scope="global"``, divide each group's scores by their mean first.
        max_group_fraction: Largest fraction of any one group's units that may go, in ``(0, 1]``
            (at least one unit always stays).

    Returns:
        Group name to the sorted indices of the units to keep, for every group of ``scores``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``channel_fraction`` is outside ``[0, 1)``, ``max_group_fraction`` outside
            ``(0, 1]``, ``scope`` unknown, a score is NaN, a global ``channel_fraction`` exceeds what the
            cap allows, or a layer-wise ``channel_fraction`` exceeds ``max_group_fraction``.
    """
    channel_fraction = check_fraction(channel_fraction, "channel_fraction", meaning=_EVERYTHING)
    scores = _check_scores(scores)
    scope = check_choice(scope, "scope", SCOPES)
    caps = _caps(scores, max_group_fraction)
    if scope == "global":
        order = _removal_order(scores, caps, normalize)
        total = sum(len(values) for values in scores.values())
        wanted = round(channel_fraction * total)
        if wanted > len(order):
            raise ValueError(
                f"cannot remove {wanted} of {total} units (channel_fraction {channel_fraction}) with "
                f"max_group_fraction={max_group_fraction}: at most {len(order)} may go; lower the "
                "channel_fraction or raise max_group_fraction"
            )
        return _keep_from_order(scores, order[:wanted])
    if channel_fraction > max_group_fraction:
        raise ValueError(
            f"channel_fraction {channel_fraction} exceeds max_group_fraction {max_group_fraction}; with "
            "scope='layer' every group loses the same fraction, so channel_fraction must be at most the cap"
        )
    counts = {name: min(round(channel_fraction * len(values)), caps[name]) for name, values in scores.items()}
    return _keep_lowest_removed(scores, counts)


def select_channels_for_removed_fraction(
    model: nn.Module,
    groups: Mapping[str, StructuredGroup],
    scores: Mapping[str, Tensor],
    removed_fraction: float,
    scope: str = "global",
    normalize: bool = False,
    max_group_fraction: float = 0.9,
) -> dict[str, list[int]]:
    """Chooses the units to keep so that at least ``removed_fraction`` of the parameters go.

    The parameter count is that of the whole model (``model.parameters()``, buffers excluded)
    and is predicted exactly from the shapes, including the interaction of groups that shrink
    the two dimensions of one weight. Units are removed in the order of ``scope``
    (lowest score first globally; or the same growing fraction from every group) and the
    smallest removal that reaches the target is returned, so the removed fraction overshoots
    the target by at most one step of that order.

    Args:
        model: The network, at the widths ``groups`` describe.
        groups: Group name to group; only groups named in ``scores`` are pruned.
        scores: Group name to 1-D unit scores (e.g. from :func:`structured_importance`).
        removed_fraction: Fraction of the model's parameters to remove, in ``(0, 1)``.
        scope: One of :data:`~lit_prune.pruning.selection.SCOPES`.
        normalize: For ``scope="global"``, divide each group's scores by their mean first.
        max_group_fraction: Largest fraction of any one group's units that may go, in ``(0, 1]``.

    Returns:
        Group name to the sorted indices of the units to keep, for every group of ``scores``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``removed_fraction`` is outside ``(0, 1)``, a score names no group or has
            the wrong length, ``scope`` is unknown, or the target cannot be reached within the
            cap (the message gives the largest reachable fraction).
    """
    removed_fraction = check_fraction(removed_fraction, "removed_fraction", zero=False, meaning=_EVERYTHING)
    scores = _check_scores(scores)
    scope = check_choice(scope, "scope", SCOPES)
    check_groups(groups)
    _check_scores_match(scores, groups)
    caps = _caps(scores, max_group_fraction)
    counter = _ParameterCounter(model, {name: groups[name] for name in scores})

    if scope == "global":
        order = _removal_order(scores, caps, normalize)
        _check_reachable(counter, _prefix_counts(scores, order), removed_fraction, max_group_fraction)
        length = _smallest_reaching(
            len(order), lambda n: counter.removed_fraction(_prefix_counts(scores, order[:n])) >= removed_fraction
        )
        return _keep_from_order(scores, order[:length])

    fractions = sorted({count / len(values) for name, values in scores.items() for count in range(caps[name] + 1)})

    def counts_at(fraction: float) -> dict[str, int]:
        return {name: min(math.floor(fraction * len(values) + 1e-9), caps[name]) for name, values in scores.items()}

    _check_reachable(counter, counts_at(fractions[-1]), removed_fraction, max_group_fraction)
    step = _smallest_reaching(
        len(fractions) - 1, lambda i: counter.removed_fraction(counts_at(fractions[i])) >= removed_fraction
    )
    return _keep_lowest_removed(scores, counts_at(fractions[step]))


def removed_parameter_fraction(
    model: nn.Module, groups: Mapping[str, StructuredGroup], keep: Mapping[str, list[int]]
) -> float:
    """Predicts the fraction of the model's parameters that removing all but ``keep`` removes.

    Args:
        model: The network, at the widths ``groups`` describe.
        groups: Group name to group.
        keep: Group name to kept unit indices (groups not named keep every unit).

    Returns:
        Removed parameters over all parameters of ``model``, in ``[0, 1)``.

    Raises:
        ValueError: If ``keep`` names a group that ``groups`` does not hold.
    """
    check_groups(groups)
    unknown = sorted(set(keep) - set(groups))
    if unknown:
        raise ValueError(f"keep names unknown groups {unknown}; groups are: {', '.join(groups)}")
    counter = _ParameterCounter(model, {name: groups[name] for name in keep})
    return counter.removed_fraction({name: groups[name].size - len(indices) for name, indices in keep.items()})


class _ParameterCounter:
    """Counts the parameters left after removing a number of units from each group."""

    def __init__(self, model: nn.Module, groups: Mapping[str, StructuredGroup]) -> None:
        parameters = dict(model.named_parameters())
        self.total = sum(parameter.numel() for parameter in parameters.values())
        touched: dict[str, dict[int, tuple[str, int]]] = {}
        for name, group in groups.items():
            for tensor_slice in group.slices:
                if tensor_slice.tensor_name in parameters:
                    per_unit = tensor_slice.width * tensor_slice.chunks
                    touched.setdefault(tensor_slice.tensor_name, {})[tensor_slice.dim] = (name, per_unit)
        self._touched = {
            parameter_name: (tuple(parameters[parameter_name].shape), dims) for parameter_name, dims in touched.items()
        }
        self._untouched = self.total - sum(math.prod(shape) for shape, _ in self._touched.values())

    def removed_fraction(self, removed: Mapping[str, int]) -> float:
        remaining = self._untouched
        for shape, dims in self._touched.values():
            size = 1
            for dim, extent in enumerate(shape):
                if dim in dims:
                    group_name, per_unit = dims[dim]
                    extent -= removed.get(group_name, 0) * per_unit
                size *= extent
            remaining += size
        return 1.0 - remaining / self.total


def _check_scores(scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if not isinstance(scores, Mapping) or not scores:
        raise TypeError("scores must be a non-empty mapping of group name to a 1-D tensor of unit scores")
    checked = {}
    for name, values in scores.items():
        if not isinstance(values, Tensor) or values.dim() != 1 or values.numel() == 0:
            raise TypeError(f"scores[{name!r}] must be a non-empty 1-D tensor, got {values!r}")
        values = values.detach().double().cpu()
        if torch.isnan(values).any():
            raise ValueError(f"scores[{name!r}] holds NaN; check the gradients or weights it came from")
        checked[name] = values
    return checked


def _check_scores_match(scores: Mapping[str, Tensor], groups: Mapping[str, StructuredGroup]) -> None:
    for name, values in scores.items():
        if name not in groups:
            raise ValueError(f"scores name group {name!r}, which is not in groups: {', '.join(groups)}")
        if len(values) != groups[name].size:
            raise ValueError(f"scores[{name!r}] has {len(values)} entries but the group has {groups[name].size} units")


def _caps(scores: Mapping[str, Tensor], max_group_fraction: float) -> dict[str, int]:
    if isinstance(max_group_fraction, bool) or not isinstance(max_group_fraction, (int, float)):
        raise TypeError(f"max_group_fraction must be a number in (0, 1], got {max_group_fraction!r}")
    if not 0.0 < max_group_fraction <= 1.0:
        raise ValueError(f"max_group_fraction must be in (0, 1], got {max_group_fraction}")
    return {
        name: min(math.floor(max_group_fraction * len(values) + 1e-9), len(values) - 1)
        for name, values in scores.items()
    }


def _removal_order(scores: Mapping[str, Tensor], caps: Mapping[str, int], normalize: bool) -> list[tuple[str, int]]:
    """All units the caps allow to go, lowest (normalised) score first."""
    names = list(scores)
    values = []
    for name in names:
        group_scores = scores[name]
        if normalize:
            mean = group_scores.abs().mean()
            group_scores = group_scores / mean if mean > 0 else group_scores
        values.append(group_scores)
    owners = torch.cat([torch.full((len(scores[name]),), position) for position, name in enumerate(names)])
    indices = torch.cat([torch.arange(len(scores[name])) for name in names])
    order = torch.sort(torch.cat(values), stable=True).indices
    taken = dict.fromkeys(names, 0)
    removal = []
    for flat in order.tolist():
        name = names[int(owners[flat])]
        if taken[name] < caps[name]:
            taken[name] += 1
            removal.append((name, int(indices[flat])))
    return removal


def _prefix_counts(scores: Mapping[str, Tensor], removal: list[tuple[str, int]]) -> dict[str, int]:
    counts = dict.fromkeys(scores, 0)
    for name, _ in removal:
        counts[name] += 1
    return counts


def _smallest_reaching(last: int, reaches: Callable[[int], bool]) -> int:
    """Smallest ``n`` in ``[0, last]`` with ``reaches(n)``, for a monotone predicate true at ``last``."""
    low, high = 0, last
    while low < high:
        middle = (low + high) // 2
        if reaches(middle):
            high = middle
        else:
            low = middle + 1
    return low


def _check_reachable(
    counter: _ParameterCounter, most_removed: Mapping[str, int], target: float, max_group_fraction: float
) -> None:
    reachable = counter.removed_fraction(most_removed)
    if reachable < target:
        raise ValueError(
            f"cannot remove {target:.1%} of the parameters by pruning these groups with "
            f"max_group_fraction={max_group_fraction}: at most {reachable:.1%} can go; include more "
            "groups (e.g. include_residual=True), raise max_group_fraction or lower the target"
        )


def _keep_from_order(scores: Mapping[str, Tensor], removal: list[tuple[str, int]]) -> dict[str, list[int]]:
    removed: dict[str, set[int]] = {name: set() for name in scores}
    for name, index in removal:
        removed[name].add(index)
    return {name: [i for i in range(len(values)) if i not in removed[name]] for name, values in scores.items()}


def _keep_lowest_removed(scores: Mapping[str, Tensor], counts: Mapping[str, int]) -> dict[str, list[int]]:
    keep = {}
    for name, values in scores.items():
        lowest = torch.sort(values, stable=True).indices[: counts[name]].tolist()
        dropped = set(lowest)
        keep[name] = [i for i in range(len(values)) if i not in dropped]
    return keep
