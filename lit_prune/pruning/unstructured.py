"""One unstructured pruning step: which parameters, which score, global or per layer.

``UnstructuredPruner`` bundles the choices a pruning callback takes from YAML and turns a target
sparsity into a new mask over the survivors of the current one. Iterative schedules call it with
rising targets; the mask only ever shrinks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from torch import nn

from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.parameters import prunable_parameters
from lit_prune.pruning.scores import magnitude_scores, random_scores
from lit_prune.pruning.selection import global_prune_mask, layerwise_prune_mask, validate_sparsity

__all__ = ["SCOPES", "SCORES", "UnstructuredPruner", "layer_targets_at_progress", "restrict_mask"]

SCOPES = ("global", "layerwise")
"""``global``: one threshold over all selected weights; ``layerwise``: a fraction per layer."""

SCORES = ("magnitude", "random")
"""Importance scores available to unstructured magnitude-style pruning."""


def layer_targets_at_progress(final: Mapping[str, float], progress: float) -> dict[str, float]:
    """Per-layer sparsities part of the way to their final values, pruning at a constant rate.

    A layer with final sparsity ``t`` is at ``1 - (1 - t) ** progress``: every step of an
    iterative schedule removes the same fraction of the layer's remaining weights, as in
    iterative magnitude pruning (Han et al. 2015, "Learning both Weights and Connections for
    Efficient Neural Networks").

    Args:
        final: Name pattern to final sparsity, each in [0, 1).
        progress: Fraction of the schedule done, in [0, 1].

    Returns:
        Name pattern to the sparsity at ``progress``.

    Raises:
        ValueError: If ``progress`` is outside [0, 1] or a sparsity outside [0, 1).
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return {name: 1.0 - (1.0 - validate_sparsity(t, f"sparsity of {name!r}")) ** progress for name, t in final.items()}


@dataclass(frozen=True)
class UnstructuredPruner:
    """Computes unstructured pruning masks for a network.

    Args:
        scope: ``"global"`` (one threshold across layers, Frankle & Carbin 2019) or
            ``"layerwise"`` (each layer pruned by the same or its own fraction, Han et al. 2015).
        score: ``"magnitude"`` (|w|) or ``"random"`` (seeded, the control of Frankle & Carbin 2019).
        layer_sparsity: Optional name pattern to final sparsity; implies per-layer selection.
        include: Name patterns of the parameters to prune (all conv/linear weights when None).
        exclude: Name patterns of parameters to keep dense.
        include_bias: Also prune biases.
        include_norm: Also prune normalisation scales.
        seed: Seed of the random score.

    Raises:
        ValueError: If ``scope`` or ``score`` is not one of the allowed names, or a sparsity in
            ``layer_sparsity`` is outside [0, 1).
    """

    scope: str = "global"
    score: str = "magnitude"
    layer_sparsity: Mapping[str, float] | None = None
    include: Sequence[str] | None = None
    exclude: Sequence[str] | None = None
    include_bias: bool = False
    include_norm: bool = False
    seed: int = 0
    _final_layers: dict[str, float] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        if self.layer_sparsity is not None:
            if not self.layer_sparsity:
                raise ValueError("layer_sparsity must name at least one pattern, or be left out")
            layers = {str(k): validate_sparsity(v, f"layer_sparsity[{k!r}]") for k, v in self.layer_sparsity.items()}
            object.__setattr__(self, "_final_layers", layers)

    def parameters(self, network: nn.Module) -> dict[str, nn.Parameter]:
        """Returns the parameters this pruner prunes (see ``prunable_parameters``)."""
        return prunable_parameters(
            network,
            include=self.include,
            exclude=self.exclude,
            include_bias=self.include_bias,
            include_norm=self.include_norm,
        )

    def mask(
        self,
        network: nn.Module,
        sparsity: float,
        progress: float = 1.0,
        current_mask: PruningMask | None = None,
        seed_offset: int = 0,
    ) -> PruningMask:
        """Returns the mask that prunes ``network`` to ``sparsity`` among the current survivors.

        Args:
            network: The network whose weights are scored.
            sparsity: Target sparsity over the selected parameters (global and uniform layerwise).
            progress: With ``layer_sparsity``, the fraction of the schedule done (see
                ``layer_targets_at_progress``); ignored otherwise.
            current_mask: The mask so far (its pruned weights stay pruned).
            seed_offset: Added to ``seed`` for random scores, so each step draws anew.

        Returns:
            The new mask over the selected parameters.
        """
        params = self.parameters(network)
        current_mask = restrict_mask(current_mask, params)
        if self.score == "magnitude":
            scores = magnitude_scores(params)
        else:
            scores = random_scores(params, seed=self.seed + seed_offset)
        if self._final_layers:
            return layerwise_prune_mask(scores, layer_targets_at_progress(self._final_layers, progress), current_mask)
        if self.scope == "layerwise":
            return layerwise_prune_mask(scores, sparsity, current_mask)
        return global_prune_mask(scores, sparsity, current_mask)

    def random_mask_like(
        self,
        network: nn.Module,
        reference: PruningMask,
        current_mask: PruningMask | None = None,
        seed_offset: int = 0,
    ) -> PruningMask:
        """A random mask with exactly the per-layer sparsity of ``reference``.

        The random-pruning control of Frankle & Carbin 2019: same layerwise sparsity, random
        positions among the survivors of ``current_mask``.

        Args:
            network: The network the masks refer to.
            reference: The mask whose per-layer pruned counts are reproduced.
            current_mask: The mask so far (its pruned weights stay pruned).
            seed_offset: Added to ``seed``.

        Returns:
            The random mask.
        """
        params = {name: param for name, param in self.parameters(network).items() if name in reference}
        scores = random_scores(params, seed=self.seed + seed_offset)
        per_layer = {_escape_pattern(name): fraction for name, fraction in reference.layer_sparsity().items()}
        return layerwise_prune_mask(scores, per_layer, restrict_mask(current_mask, params))


def restrict_mask(mask: PruningMask | None, names: Iterable[str]) -> PruningMask | None:
    """The part of ``mask`` over the parameters ``names`` (None when it covers none of them).

    The module's mask may cover parameters that another callback prunes; scoring and selection
    only see the entries of the parameters they work on.

    Args:
        mask: A mask, or None.
        names: Parameter names (a dict of parameters works too).

    Returns:
        The entries of ``mask`` named in ``names``, or None.
    """
    shared = {} if mask is None else {name: mask[name] for name in names if name in mask}
    return PruningMask(shared) if shared else None


def _escape_pattern(name: str) -> str:
    """Escapes fnmatch's special characters so a parameter name matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)

