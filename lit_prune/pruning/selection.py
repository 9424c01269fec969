"""Turning importance scores into a pruning mask.

Selection removes the lowest-scoring weights, either with one threshold over all selected
parameters (global) or with a fraction per parameter (layer-wise). Both are exact: the number
of pruned weights is ``round(sparsity * count)`` (globally, or per parameter), and
already-pruned weights stay pruned and count towards the target, so masks only shrink. Both
take an optional ``eligible`` mask of the surviving weights a step may remove (N:M sparsity,
:mod:`lit_prune.pruning.nm_sparsity`, allows only so many per group of M), and
:func:`iterative_prune_mask` reaches a target in many re-scored steps (SynFlow).

Ties at the cut (scores equal to the threshold, of which only some must go) are broken by the
:data:`TIE_RULE`: every weight has a pseudo-random 62-bit key drawn from a generator seeded
with ``tie_seed`` and the parameter's *name*, and the tied weights with the lowest keys go
first (then, for equal keys, by name and flat index). The choice is deterministic, uniform
among the tied weights, and independent of the order in which the parameters are given, so no
layer is favoured for coming early: GraSP, for one, gives the weights of dead units exact zero
scores, and hundreds of thousands of them can tie at the cut. The references differ here and
lit-prune deliberately does not follow them: snip-public keeps ``top_k`` of
``round(N·(1-s))`` (ties by the order of ``top_k``), alecwangcq/GraSP keeps scores ``<=`` its
``int(s·N)``-th largest (one weight fewer removed, all ties kept), Synaptic-Flow and open_lth
remove every score ``<=`` a threshold (all ties removed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase

import torch
from torch import Tensor

from lit_prune.pruning.mask import PruningMask
from lit_prune.validation import check_int, check_sparsity

__all__ = [
    "DEFAULT_TIE_SEED",
    "SCOPES",
    "TIE_RULE",
    "global_prune_mask",
    "iterative_prune_mask",
    "layerwise_prune_mask",
    "sparsity_after_step",
    "tie_keys",
]

SCOPES: tuple[str, ...] = ("global", "layer")
"""``global``: one ranking over all layers (or groups); ``layer``: the same fraction from each."""

TIE_RULE = "seeded_random"
"""How ties at the cut are broken: by a pseudo-random key of (seed, parameter name, index)."""

DEFAULT_TIE_SEED = 0
"""The seed of the tie-breaking keys unless a caller gives another."""

_KEY_BOUND = 2**62


def global_prune_mask(
    scores: Mapping[str, Tensor],
    sparsity: float,
    current_mask: PruningMask | None = None,
    tie_seed: int = DEFAULT_TIE_SEED,
    eligible: Mapping[str, Tensor] | None = None,
) -> PruningMask:
    """Prunes the lowest-scoring weights under one threshold shared by all parameters.

    Global magnitude pruning as in Frankle & Carbin, 2019, "The Lottery Ticket Hypothesis"
    (ICLR), and Blalock et al., 2020, "What is the State of Neural Network Pruning?" (MLSys).
    Exactly ``round(sparsity * total)`` weights end up pruned, where ``total`` counts every
    weight in ``scores``. Weights already pruned in ``current_mask`` stay pruned and count
    towards that number; when they already reach it, ``current_mask``'s pattern is returned
    unchanged (nothing is revived). Ties at the cut are broken by the :data:`TIE_RULE` (see
    the module docstring), so the mask does not depend on the order of ``scores``.

    Args:
        scores: Parameter name to importance scores (higher = keep), e.g. from
            :func:`~lit_prune.pruning.scores.magnitude_scores`.
        sparsity: Target fraction of pruned weights over all of ``scores``, in ``[0, 1)``.
        current_mask: The mask so far; parameters it does not name are fully kept.
        tie_seed: Seed of the tie-breaking keys.
        eligible: Optional name to bool tensor: only surviving weights marked ``True`` may be
            pruned by this step (all of them when None).

    Returns:
        A mask over exactly the names of ``scores``, each on its score's device.

    Raises:
        TypeError: If ``scores``, ``sparsity`` or ``tie_seed`` has the wrong type.
        ValueError: If ``sparsity`` is outside ``[0, 1)``, ``scores`` is empty or holds NaN,
            ``current_mask`` names other parameters or shapes, or the eligible weights are
            too few to reach the target.
    """
    sparsity = check_sparsity(sparsity)
    tie_seed = check_int(tie_seed, "tie_seed", None)
    kept = _current_keep(scores, current_mask)
    names = list(scores)
    device = scores[names[0]].device
    dtype = _score_dtype(scores)
    flat_scores = torch.cat([scores[n].detach().reshape(-1).to(device=device, dtype=dtype) for n in names])
    flat_kept = torch.cat([kept[n].reshape(-1).to(device) for n in names])
    flat_eligible = None if eligible is None else torch.cat([eligible[n].reshape(-1).to(device) for n in names])
    target = round(sparsity * flat_scores.numel())
    flat_kept = _prune_lowest(flat_scores, flat_kept, target, _TieKeys(scores, tie_seed), flat_eligible)
    pieces = torch.split(flat_kept, [scores[n].numel() for n in names])
    return PruningMask({n: piece.reshape(scores[n].shape).to(scores[n].device) for n, piece in zip(names, pieces)})


def layerwise_prune_mask(
    scores: Mapping[str, Tensor],
    sparsity: float | Mapping[str, float],
    current_mask: PruningMask | None = None,
    tie_seed: int = DEFAULT_TIE_SEED,
    eligible: Mapping[str, Tensor] | None = None,
) -> PruningMask:
    """Prunes a given fraction of each parameter's lowest-scoring weights.

    Layer-wise (uniform or per-layer) pruning as in Han et al., 2015, "Learning both Weights
    and Connections for Efficient Neural Networks" (NeurIPS), where per-layer rates come from
    a sensitivity analysis. Each targeted parameter ends with exactly ``round(s * numel)``
    pruned weights, already-pruned ones included; a parameter already at or above its target
    keeps its current pattern (nothing is revived). Ties at a parameter's cut are broken by
    the :data:`TIE_RULE`, with the same keys :func:`global_prune_mask` uses.

    Args:
        scores: Parameter name to importance scores (higher = keep).
        sparsity: One fraction for every parameter, or a mapping of case-sensitive ``fnmatch``
            name patterns to fractions: each parameter takes the fraction of the first pattern
            (in mapping order) that matches it, and a parameter no pattern matches keeps its
            current mask.
        current_mask: The mask so far; parameters it does not name are fully kept.
        tie_seed: Seed of the tie-breaking keys.
        eligible: Optional name to bool tensor: only surviving weights marked ``True`` may be
            pruned by this step (all of them when None).

    Returns:
        A mask over exactly the names of ``scores``, each on its score's device.

    Raises:
        TypeError: If ``scores``, ``sparsity`` or ``tie_seed`` has the wrong type.
        ValueError: If a fraction is outside ``[0, 1)``, a pattern matches no parameter,
            ``scores`` is empty or holds NaN, ``current_mask`` names other parameters or
            shapes, or a parameter's eligible weights are too few to reach its target.
    """
    tie_seed = check_int(tie_seed, "tie_seed", None)
    kept = _current_keep(scores, current_mask)
    targets = _layer_targets(list(scores), sparsity)
    result: dict[str, Tensor] = {}
    for name, score in scores.items():
        keep = kept[name].to(score.device)
        if name in targets:
            flat = score.detach().reshape(-1).to(torch.promote_types(score.dtype, torch.float32))
            target = round(targets[name] * score.numel())
            ties = _TieKeys({name: score}, tie_seed)
            allowed = None if eligible is None else eligible[name].reshape(-1).to(score.device)
            keep = _prune_lowest(flat, keep.reshape(-1), target, ties, allowed).reshape(score.shape)
        result[name] = keep
    return PruningMask(result)


def sparsity_after_step(current_sparsity: float, fraction_of_remaining: float) -> float:
    """Returns the sparsity reached by pruning a fraction of the still-kept weights.

    Iterative pruning removes ``p`` of the *remaining* weights each round (Han et al., 2015;
    Frankle & Carbin, 2019), so ``s' = 1 - (1 - s) * (1 - p)``.

    Args:
        current_sparsity: Sparsity before the step, in ``[0, 1)``.
        fraction_of_remaining: Fraction of the kept weights to prune, in ``[0, 1)``.

    Returns:
        The sparsity after the step.

    Raises:
        TypeError: If an argument is not a number.
        ValueError: If an argument is outside ``[0, 1)``.
    """
    current_sparsity = check_sparsity(current_sparsity, "current_sparsity")
    fraction_of_remaining = check_sparsity(fraction_of_remaining, "fraction_of_remaining")
    return 1.0 - (1.0 - current_sparsity) * (1.0 - fraction_of_remaining)


def iterative_prune_mask(
    params: Mapping[str, Tensor],
    score: Callable[[PruningMask], Mapping[str, Tensor]],
    select: Callable[[Mapping[str, Tensor], float, PruningMask], PruningMask],
    sparsity: float,
    iterations: int,
    current_mask: PruningMask | None = None,
) -> PruningMask:
    """Reaches ``sparsity`` in ``iterations`` rounds, re-scoring the survivors before each.

    The schedule of SynFlow (Tanaka et al., 2020, "Pruning neural networks without any data by
    iteratively conserving synaptic flow", NeurIPS, Algorithm 1): the kept fraction after
    round ``k`` is ``d_0 · (d / d_0) ** (k / iterations)``, from the current density ``d_0``
    (1 without ``current_mask``) to the target density ``d = 1 - sparsity``; the last round
    lands exactly on the target.

    Args:
        params: Name to parameter of the weights pruned (for their shapes and devices).
        score: ``score(mask)`` scores the network with the pruned weights of ``mask`` at zero.
        select: ``select(scores, sparsity, mask)`` prunes the survivors of ``mask`` to ``sparsity``.
        sparsity: Target fraction of pruned weights over ``params``, in ``[0, 1)``.
        iterations: Number of score-and-prune rounds, >= 1.
        current_mask: The mask so far; its pruned weights stay pruned. When it already reaches
            ``sparsity`` its pattern is returned unchanged.

    Returns:
        The mask over exactly the names of ``params``.

    Raises:
        TypeError: If ``iterations`` is not an int.
        ValueError: If ``sparsity`` is outside ``[0, 1)`` or ``iterations`` is below 1.
    """
    sparsity = check_sparsity(sparsity)
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise TypeError(f"iterations must be an int >= 1, got {iterations!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    keep = {} if current_mask is None else dict(current_mask.items())
    mask = PruningMask(
        {
            name: keep[name].to(param.device).clone() if name in keep else torch.ones_like(param, dtype=torch.bool)
            for name, param in params.items()
        }
    )
    start_density = 1.0 - mask.sparsity()
    target_density = 1.0 - sparsity
    if mask.num_pruned() >= round(sparsity * mask.num_total()):
        return mask
    for step in range(1, iterations + 1):
        density = start_density * (target_density / start_density) ** (step / iterations)
        step_sparsity = sparsity if step == iterations else min(1.0 - density, sparsity)
        mask = select(score(mask), step_sparsity, mask)
    return mask


def tie_keys(name: str, size: int, tie_seed: int = DEFAULT_TIE_SEED) -> Tensor:
    """The tie-breaking keys of a parameter's ``size`` flat positions (see the :data:`TIE_RULE`).

    Args:
        name: The parameter's name (its keys depend on it, not on its place among others).
        size: Its number of elements.
        tie_seed: Seed of the keys.

    Returns:
        A CPU ``int64`` tensor of ``size`` keys in ``[0, 2**62)``; lower keys go first.
    """
    digest = hashlib.sha256(f"{tie_seed}/{name}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % (2**63))
    return torch.randint(0, _KEY_BOUND, (size,), generator=generator)


class _TieKeys:
    """The tie-breaking order of flat positions in the concatenation of ``scores`` (in its order).

    Each parameter's keys come from a generator seeded with ``tie_seed`` and its name, so a
    weight's key does not depend on where its parameter sits among the others.
    """

    def __init__(self, scores: Mapping[str, Tensor], tie_seed: int) -> None:
        self._names = list(scores)
        self._sizes = [scores[name].numel() for name in self._names]
        self._offsets = torch.tensor([0, *self._sizes]).cumsum(0)
        self._name_rank = {name: rank for rank, name in enumerate(sorted(self._names))}
        self._seed = tie_seed

    def order(self, flat_positions: Tensor) -> Tensor:
        """Permutation of ``flat_positions`` (1-D, CPU) putting them in tie-breaking order."""
        owner = torch.searchsorted(self._offsets, flat_positions, right=True) - 1
        local = flat_positions - self._offsets[owner]
        keys = torch.empty_like(flat_positions)
        ranks = torch.empty_like(flat_positions)
        for position in owner.unique().tolist():
            name = self._names[position]
            here = owner == position
            keys[here] = tie_keys(name, self._sizes[position], self._seed)[local[here]]
            ranks[here] = self._name_rank[name]
        order = torch.argsort(local, stable=True)
        order = order[torch.argsort(ranks[order], stable=True)]
        return order[torch.argsort(keys[order], stable=True)]


def _prune_lowest(
    flat_scores: Tensor, flat_kept: Tensor, target: int, ties: _TieKeys, flat_eligible: Tensor | None = None
) -> Tensor:
    """Returns ``flat_kept`` with its lowest-scoring kept entries pruned until ``target`` are pruned.

    Only kept entries that ``flat_eligible`` marks (all when None) may go. Of the entries tied
    at the threshold, those first in ``ties`` order go.
    """
    to_prune = target - (flat_kept.numel() - int(flat_kept.count_nonzero()))
    if to_prune <= 0:
        return flat_kept.clone()
    removable = flat_kept if flat_eligible is None else flat_kept & flat_eligible
    kept_index = removable.nonzero().squeeze(1)
    if to_prune > kept_index.numel():
        raise ValueError(
            f"cannot prune {to_prune} more weights: only {kept_index.numel()} surviving weights may go in this step "
            "(an N:M pattern allows at most M-N pruned weights in each group of M)"
        )
    candidates = flat_scores[kept_index]
    threshold = torch.kthvalue(candidates, to_prune).values
    chosen = candidates < threshold
    missing = to_prune - int(chosen.count_nonzero())
    tied = (candidates == threshold).nonzero().squeeze(1)
    if missing < tied.numel():
        tied = tied[ties.order(kept_index[tied].cpu()).to(tied.device)]
    chosen[tied[:missing]] = True
    result = flat_kept.clone()
    result[kept_index[chosen]] = False
    return result


def _current_keep(scores: Mapping[str, Tensor], current_mask: PruningMask | None) -> dict[str, Tensor]:
    """Validates ``scores`` against ``current_mask`` and returns the keep-mask of every scored name."""
    if not isinstance(scores, Mapping):
        raise TypeError(f"scores must be a mapping of parameter name to tensor, got {type(scores).__name__}")
    if not scores:
        raise ValueError("scores is empty: score the parameters returned by prunable_parameters()")
    for name, score in scores.items():
        if not isinstance(score, Tensor):
            raise TypeError(f"scores[{name!r}] must be a tensor, got {type(score).__name__}")
        if not score.is_floating_point():
            raise TypeError(f"scores[{name!r}] must be a floating-point tensor, got dtype {score.dtype}")
        if bool(torch.isnan(score).any()):
            raise ValueError(f"scores[{name!r}] contains NaN; scores must be comparable numbers")
    if current_mask is None:
        return {name: torch.ones(s.shape, dtype=torch.bool, device=s.device) for name, s in scores.items()}
    if not isinstance(current_mask, PruningMask):
        raise TypeError(f"current_mask must be a PruningMask or None, got {type(current_mask).__name__}")
    unknown = [name for name in current_mask if name not in scores]
    if unknown:
        raise ValueError(
            f"current_mask covers parameters that have no scores: {', '.join(unknown)}; score every "
            f"masked parameter (scored: {', '.join(scores)})"
        )
    keep: dict[str, Tensor] = {}
    for name, score in scores.items():
        if name not in current_mask:
            keep[name] = torch.ones(score.shape, dtype=torch.bool, device=score.device)
            continue
        mask = current_mask[name]
        if mask.shape != score.shape:
            raise ValueError(
                f"current_mask for {name!r} has shape {tuple(mask.shape)} but its scores have shape "
                f"{tuple(score.shape)}"
            )
        keep[name] = mask.to(score.device)
    return keep


def _layer_targets(names: list[str], sparsity: float | Mapping[str, float]) -> dict[str, float]:
    """Maps each targeted parameter name to its sparsity (first matching pattern wins)."""
    if not isinstance(sparsity, Mapping):
        value = check_sparsity(sparsity)
        return dict.fromkeys(names, value)
    if not sparsity:
        raise ValueError("sparsity mapping is empty; give at least one 'pattern: fraction' entry")
    patterns: list[tuple[str, float]] = []
    for pattern, value in sparsity.items():
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"sparsity patterns must be non-empty strings, got {pattern!r}")
        patterns.append((pattern, check_sparsity(value, f"sparsity[{pattern!r}]")))
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"sparsity pattern {pattern!r} matches no scored parameter; parameters are: {', '.join(names)}"
            )
    targets: dict[str, float] = {}
    for name in names:
        for pattern, value in patterns:
            if fnmatchcase(name, pattern):
                targets[name] = value
                break
    return targets


def _score_dtype(scores: Mapping[str, Tensor]) -> torch.dtype:
    """Returns float32, or float64 when any score needs it, so half-precision scores sort exactly."""
    dtype = torch.float32
    for score in scores.values():
        dtype = torch.promote_types(dtype, score.dtype)
    return dtype
