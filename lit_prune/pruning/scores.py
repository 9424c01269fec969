"""The data-free weight scores: magnitude and random.

A weight score maps the selected parameters (name to tensor) to a plain ``dict`` of name to
a tensor of the same shape; higher means more important, and selection removes the lowest.
Every weight score registered in :mod:`lit_prune.pruning.score_registry` (magnitude, random,
LAMP, and data-driven ones such as SNIP, GraSP or SynFlow) returns this same shape, so any of
them feeds :mod:`lit_prune.pruning.selection`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.score_registry import register_score

__all__ = ["magnitude_scores", "random_scores"]


@register_score("magnitude", kind="weights")
def magnitude_scores(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scores each weight by its absolute value.

    Magnitude pruning: Han et al., 2015, "Learning both Weights and Connections for Efficient
    Neural Networks" (NeurIPS); used globally by Frankle & Carbin, 2019, "The Lottery Ticket
    Hypothesis" (ICLR).

    Args:
        params: Parameter name to tensor.

    Returns:
        Name to ``|w|``, detached, on each parameter's device and dtype.

    Raises:
        TypeError: If ``params`` is not a mapping of name to tensor.
        ValueError: If ``params`` is empty.
    """
    _check_params(params)
    return {name: param.detach().abs() for name, param in params.items()}


@register_score("random", kind="weights", needs=("seed",))
def random_scores(
    params: Mapping[str, Tensor], seed: int, current_mask: PruningMask | None = None
) -> dict[str, Tensor]:
    """Scores each weight with an independent uniform random number.

    Random pruning is the standard baseline for saliency methods (e.g. Frankle et al., 2021,
    "Pruning Neural Networks at Initialization: Why Are We Missing the Mark?", ICLR). The
    numbers come from a private CPU generator seeded with ``seed``, drawn in the order of
    ``params``: the same seed gives the same scores on every device and every DDP rank, and the
    global RNG is neither used nor advanced. Positions that ``current_mask`` pruned score
    ``-inf`` (the numbers are drawn for them all the same, so the others do not change).

    Args:
        params: Parameter name to tensor.
        seed: Seed of the generator.
        current_mask: The mask so far; its pruned positions score ``-inf``.

    Returns:
        Name to float32 scores in ``[0, 1)`` (``-inf`` where pruned), on each parameter's device.

    Raises:
        TypeError: If ``params`` is not a mapping of name to tensor, or ``seed`` is not an int.
        ValueError: If ``params`` is empty.
    """
    _check_params(params)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    scores = {
        name: torch.rand(param.shape, generator=generator, dtype=torch.float32).to(param.device)
        for name, param in params.items()
    }
    if current_mask is not None:
        for name, keep in current_mask.items():
            if name in scores:
                scores[name] = scores[name].masked_fill(~keep.to(scores[name].device), -math.inf)
    return scores


def _check_params(params: Mapping[str, Tensor]) -> None:
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of name to tensor, got {type(params).__name__}")
    if not params:
        raise ValueError("params is empty: select parameters to score with prunable_parameters()")
    for name, param in params.items():
        if not isinstance(param, Tensor):
            raise TypeError(f"params[{name!r}] must be a tensor, got {type(param).__name__}")
