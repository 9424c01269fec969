"""N:M sparsity: at most N of every M consecutive weights survive (NVIDIA's 2:4 and any N:M).

Mishra, Latorre, Pool, Stosic, Stosic, Venkatesh, Yu & Micikevicius, 2021, "Accelerating
Sparse Deep Neural Networks" (arXiv:2104.08378). The groups of M are laid out as NVIDIA's
Automatic SParsity library (ASP, ``apex.contrib.sparsity``) lays them out: along the input
dimension of a linear layer's ``(out, in)`` weight, and along the input channels at each
kernel position of a convolution's ``(out, in, kh, kw)`` weight (ASP permutes it to
``(out, kh, kw, in)`` before grouping). A layer whose input size is not a multiple of M has
no such groups and is left out.

Selection under a pattern is the usual exact selection (:mod:`lit_prune.pruning.selection`,
global or per layer, ties by the seeded rule) with one constraint: no group may lose more than
``M - N`` weights. Greedily removing the lowest-scoring weights while skipping those of full
groups is optimal for this constraint; it equals removing the lowest-scoring weights among,
in each group, the ``M - N - (already pruned)`` lowest survivors (:meth:`NMPattern.eligible`).
At the pattern's own sparsity ``1 - N/M`` every group is full, so the mask is exactly N:M;
a schedule that climbs to that sparsity (iterative, gradual, accuracy-triggered stages) prunes
by score on the way, never more than ``M - N`` per group, and ends exactly N:M. Already-pruned
weights stay pruned, so masks only shrink. ASP itself prunes once, by magnitude, to exactly
N:M; the intermediate steps are lit-prune's.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.selection import (
    DEFAULT_TIE_SEED,
    global_prune_mask,
    layerwise_prune_mask,
    tie_keys,
)
from lit_prune.validation import check_sparsity

__all__ = ["NMPattern", "nm_prune_mask", "parse_pattern", "pattern_layers", "pattern_sparsity"]

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_GROUPED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class NMPattern:
    """Keep at most ``n`` of every ``m`` consecutive weights along the input dimension.

    Attributes:
        n: Weights kept per group, >= 1.
        m: Group size, > ``n``.
    """

    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        """The sparsity of an exactly N:M mask, ``1 - n / m``."""
        return 1.0 - self.n / self.m

    def groups(self, tensor: Tensor) -> Tensor:
        """``tensor`` (a weight's shape) as ``(groups, m)``, each row one group of the pattern.

        Raises:
            ValueError: If the tensor has fewer than 2 dimensions or its input size is not a
                multiple of ``m``.
        """
        if tensor.dim() < 2 or tensor.shape[1] % self.m:
            raise ValueError(
                f"pattern {self} groups {self.m} consecutive inputs, but a tensor of shape {tuple(tensor.shape)} "
                f"has input size {tensor.shape[1] if tensor.dim() > 1 else None}, not a multiple of {self.m}"
            )
        return tensor.movedim(1, -1).reshape(-1, self.m)

    def ungroup(self, grouped: Tensor, shape: torch.Size) -> Tensor:
        """The inverse of :meth:`groups`: ``(groups, m)`` back to the weight's ``shape``."""
        moved = (shape[0], *shape[2:], shape[1])
        return grouped.reshape(moved).movedim(-1, 1)

    def is_exact(self, keep: Tensor) -> bool:
        """Whether a keep mask keeps exactly ``n`` of every group of ``m``."""
        return bool((self.groups(keep).sum(1) == self.n).all())

    def holds(self, tensor: Tensor) -> bool:
        """Whether at most ``n`` of every group of ``m`` entries of ``tensor`` are non-zero."""
        return bool((self.groups(tensor != 0).sum(1) <= self.n).all())

    def eligible(self, scores: Tensor, keep: Tensor, keys: Tensor) -> Tensor:
        """The surviving weights a step may prune: in each group, its lowest-scoring survivors
        up to ``m - n`` pruned weights in all (ties by ``keys``, lower first).

        Args:
            scores: Scores of one weight (higher = keep).
            keep: Its current keep mask.
            keys: Its tie-breaking keys (same shape, or flat).

        Returns:
            A bool tensor of the weight's shape.

        Raises:
            ValueError: If a group already has more than ``m - n`` pruned weights.
        """
        keep = keep.to(scores.device)
        grouped_keep = self.groups(keep)
        pruned = (~grouped_keep).sum(1)
        if bool((pruned > self.m - self.n).any()):
            raise ValueError(
                f"the current mask already prunes more than {self.m - self.n} of some groups of {self.m}, so "
                f"pattern {self} cannot be reached from it"
            )
        order = torch.argsort(self.groups(keys.reshape(scores.shape).to(scores.device)), dim=1, stable=True)
        by_score = torch.gather(self.groups(scores.detach()), 1, order)
        order = torch.gather(order, 1, torch.argsort(by_score, dim=1, stable=True))
        kept_last = torch.argsort(torch.gather(grouped_keep, 1, order).to(torch.uint8), dim=1, stable=True)
        order = torch.gather(order, 1, kept_last)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(self.m, device=order.device).expand_as(order))
        return self.ungroup(grouped_keep & (rank < self.m - self.n), scores.shape)


def parse_pattern(text: str | None) -> NMPattern | None:
    """Reads ``"N:M"`` (e.g. ``"2:4"``); None stays None.

    Raises:
        UserError: If the text is not ``N:M`` with ``1 <= N < M``.
    """
    if text is None:
        return None
    match = _PATTERN.match(text) if isinstance(text, str) else None
    n, m = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    if not 1 <= n < m:
        raise UserError(
            f"pattern must be 'N:M' with 1 <= N < M, e.g. '2:4' (keep 2 of every 4 consecutive weights), got {text!r}"
        )
    return NMPattern(n, m)


def pattern_sparsity(pattern: NMPattern, sparsity: float | None, option: str) -> float:
    """The target sparsity under ``pattern``: its own, ``1 - N/M``, whether given or left out.

    Args:
        pattern: The pattern.
        sparsity: The target the user gave, or None.
        option: How the target is called in the error message.

    Returns:
        ``pattern.sparsity``.

    Raises:
        UserError: If ``sparsity`` is given and differs from ``pattern.sparsity``.
    """
    if sparsity is not None and not math.isclose(sparsity, pattern.sparsity, abs_tol=1e-9):
        raise UserError(
            f"pattern {pattern} keeps {pattern.n} of every {pattern.m} weights, so {option} must be "
            f"{pattern.sparsity:g} (or left out), got {sparsity}"
        )
    return pattern.sparsity


def pattern_layers(
    network: nn.Module, params: Mapping[str, Tensor], pattern: NMPattern
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Splits ``params`` into the weights ``pattern`` applies to and those it leaves out.

    Args:
        network: The network ``params`` belong to.
        params: Name to parameter.
        pattern: The pattern.

    Returns:
        ``(fitting, left_out)``: the weights of linear and convolution layers whose input size
        is a multiple of M, and for every other parameter, why it is left out.
    """
    weights = {
        f"{name}.weight" if name else "weight": module
        for name, module in network.named_modules()
        if isinstance(module, _GROUPED_LAYERS)
    }
    fitting: dict[str, Tensor] = {}
    left_out: dict[str, str] = {}
    for name, param in params.items():
        if name not in weights:
            left_out[name] = "not the weight of a linear or convolution layer"
        elif param.shape[1] % pattern.m:
            left_out[name] = f"input size {param.shape[1]} is not a multiple of {pattern.m}"
        else:
            fitting[name] = param
    return fitting, left_out


def nm_prune_mask(
    scores: Mapping[str, Tensor],
    sparsity: float | Mapping[str, float],
    pattern: NMPattern,
    scope: str = "global",
    current_mask: PruningMask | None = None,
    tie_seed: int = DEFAULT_TIE_SEED,
) -> PruningMask:
    """Prunes the lowest-scoring weights to ``sparsity`` with at most ``M - N`` per group of M.

    Args:
        scores: Parameter name to scores (higher = keep); every parameter must fit the pattern.
        sparsity: Target over all of ``scores`` (``scope="global"``), or per parameter (one
            fraction, or name patterns to fractions as
            :func:`~lit_prune.pruning.selection.layerwise_prune_mask` takes), at most
            ``1 - N/M``; at exactly ``1 - N/M`` the mask is exactly N:M.
        pattern: The pattern.
        scope: ``"global"`` or ``"layer"``.
        current_mask: The mask so far; its pruned weights stay pruned.
        tie_seed: Seed of the tie-breaking keys.

    Returns:
        The mask over exactly the names of ``scores``.

    Raises:
        ValueError: If a target exceeds ``1 - N/M``, a parameter does not fit the pattern, or
            ``current_mask`` already prunes more than ``M - N`` of a group.
    """
    targets = sparsity.values() if isinstance(sparsity, Mapping) else [sparsity]
    for target in targets:
        if check_sparsity(target) > pattern.sparsity + 1e-9:
            raise ValueError(
                f"pattern {pattern} prunes at most {pattern.sparsity:g} of the weights, got a target of {target}"
            )
    eligible = {}
    for name, score in scores.items():
        keep = current_mask.get(name) if current_mask is not None else None
        if keep is None:
            keep = torch.ones(score.shape, dtype=torch.bool)
        eligible[name] = pattern.eligible(score, keep, tie_keys(name, score.numel(), tie_seed))
    if scope == "global":
        return global_prune_mask(scores, sparsity, current_mask, tie_seed, eligible=eligible)
    return layerwise_prune_mask(scores, sparsity, current_mask, tie_seed, eligible=eligible)
