"""Which parameters of a network unstructured pruning acts on.

By default only the weights of convolution and linear layers are pruned: their biases, the
affine parameters of normalisation layers, embeddings, position embeddings and class tokens
are few, cheap, and disproportionately harmful to remove (Han et al., 2015, "Learning both
Weights and Connections for Efficient Neural Networks"; Frankle & Carbin, 2019, "The Lottery
Ticket Hypothesis", both prune weights only).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

import torch
from torch import Tensor, nn

from lit_prune.pruning.mask import PruningMask

__all__ = [
    "NORM_LAYER_TYPES",
    "PRUNABLE_LAYER_TYPES",
    "check_model_parameters",
    "current_keep_masks",
    "parameter_count",
    "prunable_parameters",
]

PRUNABLE_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
"""Layers whose ``weight`` is a pruning candidate by default."""

NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)
"""Normalisation layers whose affine parameters become candidates with ``include_norm=True``."""


def parameter_count(network: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters of ``network``, each shared parameter counted once.

    Args:
        network: The network.
        nonzero: Count only the entries that are not exactly zero.

    Returns:
        The count over every parameter (weights, biases, normalisation), pruned or not.
    """
    parameters = network.parameters()
    if nonzero:
        return sum(int(torch.count_nonzero(parameter.detach())) for parameter in parameters)
    return sum(parameter.numel() for parameter in parameters)


def prunable_parameters(
    model: nn.Module,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    include_bias: bool = False,
    include_norm: bool = False,
) -> dict[str, nn.Parameter]:
    """Selects the parameters to prune, keyed by their ``named_parameters()`` name.

    The candidates are the weights of :data:`PRUNABLE_LAYER_TYPES`; ``include_norm`` adds the
    weights (scales) of :data:`NORM_LAYER_TYPES`, and ``include_bias`` adds the biases of every
    candidate layer type. Embeddings and parameters owned directly by a container (class
    tokens, position embeddings) are never candidates. ``include`` then keeps only the
    candidates matching one of its patterns, and ``exclude`` drops those matching one of its
    patterns. Patterns are case-sensitive ``fnmatch`` globs over the full name, where ``*``
    also crosses dots: ``exclude=["conv1.weight", "fc.weight"]`` keeps a ResNet's first
    convolution and classifier dense, ``include=["layer3.*"]`` prunes only the last stage.

    Args:
        model: The network.
        include: Patterns; when given, only matching candidates are selected.
        exclude: Patterns; matching candidates are not selected.
        include_bias: Also select the biases of candidate layers (with ``include_norm``, the
            normalisation biases too).
        include_norm: Also select the weights (scales) of normalisation layers.

    Returns:
        Name to parameter, in ``model.named_parameters()`` order. Shared parameters appear once.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or a pattern list is a bare string or
            holds a non-string.
        ValueError: If a pattern matches no candidate (the message lists the candidates), or
            if nothing is left to prune.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    include_patterns = _check_patterns(include, "include")
    exclude_patterns = _check_patterns(exclude, "exclude")

    candidate_ids = _candidate_ids(model, include_bias=include_bias, include_norm=include_norm)
    all_named = dict(model.named_parameters())
    candidates = {name: p for name, p in all_named.items() if id(p) in candidate_ids}
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no prunable parameters: none of its parameters is the "
            f"weight of a {', '.join(t.__name__ for t in PRUNABLE_LAYER_TYPES)} layer"
            + ("" if include_norm else " (pass include_norm=True to prune normalisation layers)")
        )

    for kind, patterns in (("include", include_patterns), ("exclude", exclude_patterns)):
        for pattern in patterns:
            if not any(fnmatchcase(name, pattern) for name in candidates):
                raise ValueError(_unmatched_message(kind, pattern, candidates, all_named))

    selected = {
        name: param
        for name, param in candidates.items()
        if (not include_patterns or any(fnmatchcase(name, p) for p in include_patterns))
        and not any(fnmatchcase(name, p) for p in exclude_patterns)
    }
    if not selected:
        raise ValueError(
            f"include={list(include_patterns)} and exclude={list(exclude_patterns)} leave no parameter "
            f"to prune; candidates are: {', '.join(candidates)}"
        )
    return selected


def _check_patterns(patterns: Sequence[str] | None, argument: str) -> tuple[str, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, str) or not isinstance(patterns, Sequence):
        raise TypeError(
            f"{argument} must be a list of name patterns such as ['conv1.weight', 'layer1.*'], got {patterns!r}"
        )
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise TypeError(f"{argument} patterns must be non-empty strings, got {pattern!r}")
    return tuple(patterns)


def _candidate_ids(model: nn.Module, include_bias: bool, include_norm: bool) -> set[int]:
    owner_types = PRUNABLE_LAYER_TYPES + (NORM_LAYER_TYPES if include_norm else ())
    attributes = ("weight", "bias") if include_bias else ("weight",)
    ids: set[int] = set()
    for module in model.modules():
        if not isinstance(module, owner_types):
            continue
        for attribute in attributes:
            param = getattr(module, attribute, None)
            if isinstance(param, nn.Parameter):
                ids.add(id(param))
    return ids


def _unmatched_message(
    kind: str, pattern: str, candidates: dict[str, nn.Parameter], all_named: dict[str, nn.Parameter]
) -> str:
    message = f"{kind} pattern {pattern!r} matches no prunable parameter"
    others = [name for name in all_named if name not in candidates and fnmatchcase(name, pattern)]
    if others:
        message += (
            f" (it matches only non-candidates: {', '.join(others)}; biases need include_bias=True, "
            "normalisation layers include_norm=True, and embeddings or tokens are never pruned)"
        )
    return f"{message}; candidates are: {', '.join(candidates)}"


def check_model_parameters(model: nn.Module, params: Mapping[str, Tensor]) -> dict[str, nn.Parameter]:
    """Checks that ``params`` are floating-point parameters of ``model`` under their own names.

    Args:
        model: The network.
        params: Name to parameter, e.g. from :func:`prunable_parameters`.

    Returns:
        ``params`` as a plain dict.

    Raises:
        TypeError: If an argument has the wrong type or a parameter is not floating point.
        ValueError: If ``params`` is empty or names a tensor that is not that parameter of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameter name to parameter, got {type(params).__name__}")
    if not params:
        raise ValueError("params is empty: select the parameters to score with prunable_parameters(model)")
    own = dict(model.named_parameters())
    for name, param in params.items():
        if own.get(name) is not param:
            raise ValueError(
                f"params[{name!r}] is not the parameter {name!r} of {type(model).__name__}; pass "
                f"prunable_parameters(model) or a sub-dict of model.named_parameters()"
            )
        if not param.is_floating_point():
            raise TypeError(f"params[{name!r}] must be a floating-point parameter, got dtype {param.dtype}")
    return dict(params)  # type: ignore[arg-type]


def current_keep_masks(named: Mapping[str, Tensor], current_mask: PruningMask | None) -> dict[str, Tensor | None]:
    """The keep mask of each named parameter (None where ``current_mask`` has none), on its device.

    Args:
        named: Name to parameter of the parameters being scored or probed.
        current_mask: The mask so far, or None.

    Returns:
        Name to bool keep tensor, or None for a parameter the mask does not cover.

    Raises:
        TypeError: If ``current_mask`` is not a ``PruningMask``.
        ValueError: If the mask covers other parameters or has other shapes.
    """
    if current_mask is None:
        return dict.fromkeys(named)
    if not isinstance(current_mask, PruningMask):
        raise TypeError(f"current_mask must be a PruningMask or None, got {type(current_mask).__name__}")
    unknown = [name for name in current_mask if name not in named]
    if unknown:
        raise ValueError(
            f"current_mask covers parameters that are not scored or probed: {', '.join(unknown)}; include every "
            f"masked parameter (given: {', '.join(named)})"
        )
    keep: dict[str, Tensor | None] = {}
    for name, param in named.items():
        mask = current_mask.get(name)
        if mask is not None and mask.shape != param.shape:
            raise ValueError(
                f"current_mask for {name!r} has shape {tuple(mask.shape)} but the parameter has shape "
                f"{tuple(param.shape)}"
            )
        keep[name] = None if mask is None else mask.to(param.device)
    return keep
