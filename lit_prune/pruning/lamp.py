"""LAMP: the layer-adaptive magnitude score, for one global threshold across layers.

Lee, Park, Mo, Ahn & Shin, 2021, "Layer-adaptive Sparsity for the Magnitude-based Pruning"
(ICLR). Within each layer the weights are sorted by magnitude, ``|W[1]| <= ... <= |W[n]|``,
and weight ``u`` scores

    score(u; W) = W[u]² / Σ_{v >= u} W[v]²,

its squared magnitude over the squared magnitudes of itself and every larger weight of its
layer. The ranking inside a layer is the magnitude ranking, and the largest weight of every
layer scores 1, so one *global* threshold on LAMP scores chooses a sparsity for each layer and
never empties a layer. The authors' code (jaeho-lee/layer-adaptive-sparsity,
``tools/pruners.py``, ``_normalize_scores``) computes the suffix sums as the total minus a
cumulative sum in float32; here they are summed directly, from the largest weight down, in
float64, so the top weights' scores do not lose their digits to cancellation; equal
magnitudes take the order of their flat index (a stable sort), where the reference's
unstable sort leaves it open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.score_registry import register_score

__all__ = ["lamp_scores"]


@register_score("lamp", kind="weights", label="LAMP", scopes=("global",))
def lamp_scores(params: Mapping[str, Tensor], current_mask: PruningMask | None = None) -> dict[str, Tensor]:
    """Scores each weight by LAMP (Lee et al., 2021), per layer, for global selection.

    Args:
        params: Parameter name to tensor (each is one layer of the formula).
        current_mask: The mask so far: its pruned weights count as zero in the sums (the
            formula runs over the survivors, as in the paper's iterative pruning) and score
            ``-inf``.

    Returns:
        Name to float64 scores in ``[0, 1]`` (``-inf`` where pruned), on each parameter's device.
        A layer whose weights are all zero scores 0 everywhere.

    Raises:
        TypeError: If ``params`` is not a mapping of name to tensor.
        ValueError: If ``params`` is empty.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name to tensor, got {type(params).__name__}")
    if not params:
        raise ValueError("params is empty: select parameters to score with prunable_parameters()")
    scores: dict[str, Tensor] = {}
    for name, param in params.items():
        if not isinstance(param, Tensor):
            raise TypeError(f"params[{name!r}] must be a tensor, got {type(param).__name__}")
        keep = None if current_mask is None else current_mask.get(name)
        weight = param.detach().double()
        if keep is not None:
            weight = weight * keep.to(weight.device)
        score = _layer_scores(weight)
        scores[name] = score if keep is None else score.masked_fill(~keep.to(score.device), -math.inf)
    return scores


def _layer_scores(weight: Tensor) -> Tensor:
    """``W[u]² / Σ_{v >= u} W[v]²`` over one layer, in the layer's shape."""
    squares = weight.reshape(-1).pow(2)
    order = torch.sort(squares, stable=True).indices
    ascending = squares[order]
    suffix = ascending.flip(0).cumsum(0).flip(0)
    normalised = torch.where(suffix > 0, ascending / suffix.clamp_min(torch.finfo(suffix.dtype).tiny), 0.0)
    result = torch.empty_like(squares)
    result[order] = normalised
    return result.reshape(weight.shape)
