"""One unstructured pruning step: which parameters, which score, global or per layer, which pattern.

``UnstructuredPruner`` bundles the choices a pruning callback takes from YAML and turns a target
sparsity into a new mask over the survivors of the current one. Iterative schedules call it with
rising targets; the mask only ever shrinks. The score is any registered weight score
(:mod:`lit_prune.pruning.score_registry`) or the import path of a user's own; an optional N:M
``pattern`` (:mod:`lit_prune.pruning.nm_sparsity`) constrains the selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.nm_sparsity import NMPattern, nm_prune_mask, parse_pattern, pattern_layers
from lit_prune.pruning.parameters import prunable_parameters
from lit_prune.pruning.score_registry import Score, get_score
from lit_prune.pruning.scores import random_scores
from lit_prune.pruning.selection import (
    SCOPES,
    global_prune_mask,
    iterative_prune_mask,
    layerwise_prune_mask,
)
from lit_prune.validation import check_sparsity

__all__ = ["UnstructuredPruner", "check_scope", "layer_targets_at_progress", "restrict_mask"]

_RENAMED_SCOPES = {"layerwise": "layer"}


def check_scope(scope: str, score: Score | None = None) -> str:
    """Checks a selection scope (and, given a score, that the score is meant for it).

    Args:
        scope: ``"global"`` or ``"layer"``.
        score: The score the scope selects by, or None.

    Returns:
        ``scope``.

    Raises:
        UserError: If ``scope`` is not one of ``SCOPES`` (an old name says the new one), or the
            score is meant for other scopes (LAMP is meant for ``global``).
    """
    if scope in _RENAMED_SCOPES:
        raise UserError(f"scope {scope!r} is now called {_RENAMED_SCOPES[scope]!r}; allowed: {list(SCOPES)}")
    if scope not in SCOPES:
        raise UserError(f"scope must be one of {list(SCOPES)}, got {scope!r}")
    if score is not None and scope not in score.scopes:
        raise UserError(
            f"score {score.name!r} is meant for scope {' or '.join(map(repr, score.scopes))}, got scope {scope!r}"
        )
    return scope


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
    return {name: 1.0 - (1.0 - check_sparsity(t, f"sparsity of {name!r}")) ** progress for name, t in final.items()}


@dataclass(frozen=True)
class UnstructuredPruner:
    """Computes unstructured pruning masks for a network.

    Args:
        scope: ``"global"`` (one threshold across layers, Frankle & Carbin 2019) or
            ``"layer"`` (each layer pruned by the same or its own fraction, Han et al. 2015).
        score: A weight score from ``list_scores("weights")`` (``"magnitude"``: |w|;
            ``"random"``: seeded, the control of Frankle & Carbin 2019; ``"lamp"``; the
            data-taking ``snip``, ``grasp``, ``synflow``), or the import path
            ``package.module.function`` of a registered function of one's own.
        layer_sparsity: Optional name pattern to final sparsity; implies per-layer selection.
        include: Name patterns of the parameters to prune (all conv/linear weights when None).
        exclude: Name patterns of parameters to keep dense.
        include_bias: Also prune biases.
        include_norm: Also prune normalisation scales.
        seed: Seed of seeded scores (``random``).
        pattern: ``"N:M"`` (e.g. ``"2:4"``): at most N of every M consecutive input weights
            survive; only the linear and convolution weights whose input size is a multiple of
            M are pruned (see :meth:`left_out`).

    Raises:
        UserError: If ``scope``, ``score`` or ``pattern`` is not allowed (``"layerwise"`` is
            now ``"layer"``), or ``pattern`` comes with ``layer_sparsity``.
        ValueError: If a sparsity in ``layer_sparsity`` is outside [0, 1).
    """

    scope: str = "global"
    score: str = "magnitude"
    layer_sparsity: Mapping[str, float] | None = None
    include: Sequence[str] | None = None
    exclude: Sequence[str] | None = None
    include_bias: bool = False
    include_norm: bool = False
    seed: int = 0
    pattern: str | None = None
    _final_layers: dict[str, float] = field(init=False, repr=False, default_factory=dict)
    _score: Score = field(init=False, repr=False)
    _pattern: NMPattern | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_score", get_score(self.score, kind="weights"))
        check_scope(self.scope, self._score)
        object.__setattr__(self, "_pattern", parse_pattern(self.pattern))
        if self.layer_sparsity is not None and self._score.iterative:
            raise UserError(
                f"score {self.score!r} re-scores in rounds towards one global target; leave out layer_sparsity"
            )
        if self.layer_sparsity is not None:
            if self._pattern is not None:
                raise UserError(
                    f"pattern {self._pattern} fixes every pruned layer's sparsity at {self._pattern.sparsity:g}; "
                    "leave out layer_sparsity"
                )
            if not self.layer_sparsity:
                raise ValueError("layer_sparsity must name at least one pattern, or be left out")
            layers = {str(k): check_sparsity(v, f"layer_sparsity[{k!r}]") for k, v in self.layer_sparsity.items()}
            object.__setattr__(self, "_final_layers", layers)

    @property
    def scorer(self) -> Score:
        """The registered score this pruner ranks weights by."""
        return self._score

    @property
    def nm_pattern(self) -> NMPattern | None:
        """The parsed N:M pattern, or None."""
        return self._pattern

    def parameters(self, network: nn.Module) -> dict[str, nn.Parameter]:
        """Returns the parameters this pruner prunes (see ``prunable_parameters``).

        With a ``pattern``, only those it applies to (see :meth:`left_out`).

        Raises:
            UserError: With a ``pattern``, if an ``include`` entry names a parameter it does not
                apply to, or it applies to none of the selected parameters.
        """
        params = self._selected(network)
        if self._pattern is None:
            return params
        fitting, left_out = pattern_layers(network, params, self._pattern)
        named = sorted(name for name in left_out if name in (self.include or ()))
        if named:
            raise UserError(
                f"pattern {self._pattern} cannot prune {', '.join(f'{n} ({left_out[n]})' for n in named)}, which "
                "include names explicitly; remove it from include"
            )
        if not fitting:
            raise UserError(
                f"pattern {self._pattern} applies to none of the selected parameters: "
                + "; ".join(f"{name}: {why}" for name, why in left_out.items())
            )
        return fitting  # type: ignore[return-value]

    def left_out(self, network: nn.Module) -> dict[str, str]:
        """The selected parameters that the ``pattern`` leaves dense, each with the reason (none without one)."""
        if self._pattern is None:
            return {}
        return pattern_layers(network, self._selected(network), self._pattern)[1]

    def _selected(self, network: nn.Module) -> dict[str, nn.Parameter]:
        """The parameters ``include``, ``exclude``, ``include_bias`` and ``include_norm`` select."""
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
        iterations: int = 1,
        **inputs: Any,
    ) -> PruningMask:
        """Returns the mask that prunes ``network`` to ``sparsity`` among the current survivors.

        Args:
            network: The network whose weights are scored.
            sparsity: Target sparsity over the selected parameters (global and uniform layer).
            progress: With ``layer_sparsity``, the fraction of the schedule done (see
                ``layer_targets_at_progress``); ignored otherwise.
            current_mask: The mask so far (its pruned weights stay pruned).
            seed_offset: Added to ``seed`` for seeded scores, so each step draws anew.
            iterations: For an iterative score (SynFlow), the score-and-prune rounds.
            **inputs: What the score needs beyond the network and parameters (``batches``,
                ``input_shape``) and its options (``temperature``, ``bn_mode``).

        Returns:
            The new mask over the selected parameters.
        """
        params = self.parameters(network)
        current_mask = restrict_mask(current_mask, params)
        targets = layer_targets_at_progress(self._final_layers, progress) if self._final_layers else sparsity

        def score(mask: PruningMask | None) -> dict[str, Tensor]:
            return self._score(model=network, params=params, current_mask=mask, seed=self.seed + seed_offset, **inputs)

        if self._score.iterative:
            return iterative_prune_mask(params, score, self._select, sparsity, iterations, current_mask)
        return self._select(score(current_mask), targets, current_mask)

    def random_mask_like(
        self,
        network: nn.Module,
        reference: PruningMask,
        current_mask: PruningMask | None = None,
        seed_offset: int = 0,
    ) -> PruningMask:
        """A random mask with exactly the per-layer sparsity of ``reference``.

        The random-pruning control of Frankle & Carbin 2019: same layerwise sparsity, random
        positions among the survivors of ``current_mask`` (and within the ``pattern``).

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
        return self._select(scores, per_layer, restrict_mask(current_mask, params), scope="layer")

    def _select(
        self,
        scores: Mapping[str, Tensor],
        sparsity: float | Mapping[str, float],
        current_mask: PruningMask | None,
        scope: str | None = None,
    ) -> PruningMask:
        """Prunes by ``scores``: per layer for ``layer`` scope or per-layer targets, else globally."""
        per_layer = isinstance(sparsity, Mapping) or (scope or self.scope) == "layer"
        if self._pattern is not None:
            return nm_prune_mask(scores, sparsity, self._pattern, "layer" if per_layer else "global", current_mask)
        if per_layer:
            return layerwise_prune_mask(scores, sparsity, current_mask)
        return global_prune_mask(scores, sparsity, current_mask)


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
