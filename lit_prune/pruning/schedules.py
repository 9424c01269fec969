"""Pruning schedules: which sparsity to reach at which round or step.

The discrete schedules return the list of target sparsities, one per pruning round, to feed
to :func:`~lit_prune.pruning.selection.global_prune_mask` or
:func:`~lit_prune.pruning.selection.layerwise_prune_mask` in order; :func:`cubic_sparsity` is
the gradual schedule evaluated at a training step. All targets are cumulative sparsities
(fraction of weights that are zero), and every schedule is non-decreasing.
"""

from __future__ import annotations

import math

from lit_prune.pruning.selection import sparsity_after_step
from lit_prune.validation import check_fraction, check_sparsity

_PROGRESS = "0 would never make progress"

__all__ = ["cubic_sparsity", "fixed_steps", "geometric", "linear_steps", "one_shot"]

_MAX_ROUNDS = 10_000
_TOLERANCE = 1e-9


def one_shot(target: float) -> list[float]:
    """Prunes to ``target`` in a single round (Han et al., 2015, "Learning both Weights and
    Connections for Efficient Neural Networks", NeurIPS: prune once, then retrain).

    Args:
        target: Final sparsity in ``[0, 1)``.

    Returns:
        ``[target]``.

    Raises:
        ValueError: If ``target`` is outside ``[0, 1)``.
    """
    return [check_sparsity(target, "target")]


def fixed_steps(target: float, fraction_of_remaining: float, initial: float = 0.0) -> list[float]:
    """Reaches ``target`` by pruning a fixed fraction of the remaining weights per step.

    Iterative pruning with retraining between steps (Han et al., 2015; Frankle & Carbin, 2019,
    "The Lottery Ticket Hypothesis", ICLR): step ``k`` reaches
    ``1 - (1 - initial) * (1 - fraction_of_remaining) ** k``, and the step that would overshoot
    ``target`` is clipped to it.

    Args:
        target: Final sparsity in ``[0, 1)``.
        fraction_of_remaining: Fraction of the still-kept weights pruned per step, in ``(0, 1)``.
        initial: Sparsity before the first step, in ``[0, 1)``.

    Returns:
        Increasing sparsities ending with ``target``; empty when ``initial >= target``.

    Raises:
        ValueError: If an argument is out of range or more than 10,000 steps would be needed.
    """
    target = check_sparsity(target, "target")
    initial = check_sparsity(initial, "initial")
    fraction_of_remaining = check_fraction(
        fraction_of_remaining, "fraction_of_remaining", zero=False, meaning=_PROGRESS
    )
    if initial >= target:
        return []
    rounds = math.log((1.0 - target) / (1.0 - initial)) / math.log(1.0 - fraction_of_remaining)
    needed = math.ceil(rounds - _TOLERANCE)
    if needed > _MAX_ROUNDS:
        raise ValueError(
            f"reaching sparsity {target} from {initial} in steps of {fraction_of_remaining} of the remaining "
            f"weights takes {needed} steps; at most {_MAX_ROUNDS} are allowed, use a larger fraction_of_remaining"
        )
    steps: list[float] = []
    sparsity = initial
    for _ in range(needed):
        sparsity = sparsity_after_step(sparsity, fraction_of_remaining)
        steps.append(min(sparsity, target))
    steps[-1] = target
    return steps


def geometric(fraction_of_remaining: float, rounds: int) -> list[float]:
    """Iterative magnitude pruning (IMP) rounds, each pruning ``p`` of the remaining weights.

    Frankle & Carbin, 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
    Networks" (ICLR): after round ``r`` the sparsity is ``1 - (1 - p) ** r``, a cumulative
    target that selection reaches exactly (``round(s·N)`` weights). This deliberately differs
    from the reference implementation (facebookresearch/open_lth, ``pruning/sparse_global.py``),
    which prunes relative to the ``R`` weights remaining: it takes the ``ceil(p·R)``-th entry of
    the sorted magnitudes as threshold and removes every weight ``<=`` it, i.e. ``ceil(p·R) + 1``
    per round when nothing ties, so its sparsity drifts slightly above ``1 - (1 - p) ** r``.

    Args:
        fraction_of_remaining: ``p``, in ``(0, 1)`` (Frankle & Carbin use 0.2).
        rounds: Number of rounds, at least 1.

    Returns:
        The sparsity after each round.

    Raises:
        TypeError: If ``rounds`` is not an int.
        ValueError: If ``fraction_of_remaining`` is outside ``(0, 1)`` or ``rounds`` is not in
            ``[1, 10000]``.
    """
    fraction_of_remaining = check_fraction(
        fraction_of_remaining, "fraction_of_remaining", zero=False, meaning=_PROGRESS
    )
    if isinstance(rounds, bool) or not isinstance(rounds, int):
        raise TypeError(f"rounds must be an int, got {rounds!r}")
    if not 1 <= rounds <= _MAX_ROUNDS:
        raise ValueError(f"rounds must be in [1, {_MAX_ROUNDS}], got {rounds}")
    return [1.0 - (1.0 - fraction_of_remaining) ** r for r in range(1, rounds + 1)]


def linear_steps(target: float, step: float, initial: float = 0.0) -> list[float]:
    """Reaches ``target`` in equal increments of sparsity (e.g. 10 %, 20 %, ... 90 %).

    The additive variant of iterative pruning used in pruning surveys such as Blalock et al.,
    2020, "What is the State of Neural Network Pruning?" (MLSys). The last increment is
    clipped to ``target``.

    Args:
        target: Final sparsity in ``[0, 1)``.
        step: Sparsity added per step, in ``(0, 1)``.
        initial: Sparsity before the first step, in ``[0, 1)``.

    Returns:
        Increasing sparsities ending with ``target``; empty when ``initial >= target``.

    Raises:
        ValueError: If an argument is out of range or more than 10,000 steps would be needed.
    """
    target = check_sparsity(target, "target")
    initial = check_sparsity(initial, "initial")
    step = check_fraction(step, "step", zero=False, meaning=_PROGRESS)
    if initial >= target:
        return []
    needed = math.ceil((target - initial) / step - _TOLERANCE)
    if needed > _MAX_ROUNDS:
        raise ValueError(f"steps of {step} take {needed} steps to reach {target}; at most {_MAX_ROUNDS} are allowed")
    return [min(initial + k * step, target) for k in range(1, needed)] + [target]


def cubic_sparsity(step: int, start_step: int, end_step: int, initial: float, final: float) -> float:
    """Gradual (automated gradual pruning, AGP) sparsity at a training step.

    Zhu & Gupta, 2017, "To prune, or not to prune: exploring the efficacy of pruning for model
    compression" (arXiv:1710.01878), eq. (1):
    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** 3`` for ``t_0 <= t <= t_end``;
    ``s_i`` before ``t_0`` and ``s_f`` after ``t_end``. Pruning is fast early, while redundant
    weights are plentiful, and slows down as the target approaches.

    Args:
        step: Current step (or epoch).
        start_step: ``t_0``, the first pruning step.
        end_step: ``t_end``, the step at which ``final`` is reached; greater than ``start_step``.
        initial: ``s_i``, sparsity at ``start_step``, in ``[0, 1)``.
        final: ``s_f``, sparsity from ``end_step`` on, in ``[initial, 1)``.

    Returns:
        The target sparsity at ``step``.

    Raises:
        TypeError: If a step is not an int.
        ValueError: If ``end_step <= start_step``, a sparsity is outside ``[0, 1)``, or
            ``final < initial``.
    """
    for name, value in (("step", step), ("start_step", start_step), ("end_step", end_step)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if end_step <= start_step:
        raise ValueError(f"end_step ({end_step}) must be greater than start_step ({start_step})")
    initial = check_sparsity(initial, "initial")
    final = check_sparsity(final, "final")
    if final < initial:
        raise ValueError(f"final sparsity ({final}) must be at least initial sparsity ({initial})")
    progress = min(max((step - start_step) / (end_step - start_step), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3
