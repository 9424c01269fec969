"""Shared base of the unstructured pruning callbacks: options, mask installation, logging, stages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from callbacks.base import PruningCallback
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import PruningMask
from lit_prune.pruning.unstructured import UnstructuredPruner

__all__ = ["MaskPruningCallback"]


class MaskPruningCallback(PruningCallback):
    """Base class: turns YAML options into an ``UnstructuredPruner`` and installs its masks.

    The mask lives in the ``ImageClassifier`` (which checkpoints it and keeps pruned weights at
    zero); subclasses decide *when* to prune. A new mask is computed on rank 0 and broadcast, so
    every DDP rank holds the same one.

    The score is any registered weight score (``lit_prune.pruning.list_scores("weights")``) or
    the import path ``package.module.function`` of a user's registered function, resolved when
    the callback is built; a subclass supplies what the score declares it needs (``supplies``),
    and one that needs more is refused with the callback that supplies it. With ``pattern:
    "N:M"`` the selection keeps at most N of every M consecutive input weights of each linear
    and convolution layer (``lit_prune.pruning.nm_sparsity``); layers whose input size is not a
    multiple of M are left dense, with a logged note, and refused if ``include`` names them.

    Args:
        scope: ``"global"`` or ``"layer"``.
        score: A weight score: ``"magnitude"``, ``"random"``, ``"lamp"``, or an import path.
        pattern: ``"N:M"``, e.g. ``"2:4"``; None prunes without a pattern.
        layer_sparsity: Optional name pattern to final sparsity (per-layer targets).
        include: Name patterns of parameters to prune (conv and linear weights when None).
        exclude: Name patterns of parameters to keep dense, e.g. ``["conv1.weight", "fc.weight"]``.
        include_bias: Also prune biases.
        include_norm: Also prune normalisation scales.
        seed: Seed of random scores.
        log_layers: Log each layer's sparsity as ``prune/layer/<name>`` every epoch.
        **kwargs: Options of ``PruningCallback`` (eval_batches).
    """

    supplies: ClassVar[frozenset[str]] = frozenset({"seed", "gradients"})
    """What this callback gives a score, from ``lit_prune.pruning.score_registry.NEEDS``."""

    def __init__(
        self,
        scope: str = "global",
        score: str = "magnitude",
        pattern: str | None = None,
        layer_sparsity: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        include_bias: bool = False,
        include_norm: bool = False,
        seed: int = 0,
        log_layers: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pruner = UnstructuredPruner(
            scope=scope,
            score=score,
            layer_sparsity=dict(layer_sparsity) if layer_sparsity else None,
            include=list(include) if include else None,
            exclude=list(exclude) if exclude else None,
            include_bias=include_bias,
            include_norm=include_norm,
            seed=seed,
            pattern=pattern,
        )
        missing = sorted(self.pruner.scorer.needs - self.supplies)
        if missing:
            raise UserError(
                f"score {score!r} needs {', '.join(missing)}, which {type(self).__name__} does not supply; "
                "SaliencyPruning draws calibration batches and the input shape for such scores"
            )
        self.log_layers = log_layers

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        network = self.classifier(pl_module).network
        self.pruner.parameters(network)
        left_out = self.pruner.left_out(network)
        if left_out and stage == "fit":
            rank_zero_info(
                f"{type(self).__name__}: pattern {self.pruner.nm_pattern} leaves {len(left_out)} parameter(s) dense: "
                + "; ".join(f"{name} ({why})" for name, why in left_out.items())
            )

    def install_mask(self, trainer: Trainer, pl_module: ImageClassifier, compute: Callable[[], PruningMask]) -> None:
        """Computes a mask on every rank and installs rank 0's in the module on every rank.

        Scores may run the network (with synchronised batch norm, a collective), so every rank
        computes; rank 0's mask, or its failure, is broadcast (:meth:`decide_on_rank_zero`).

        Args:
            trainer: The running trainer.
            pl_module: The module whose mask is set (intersected with its current one).
            compute: Returns the new mask.
        """
        state = self.decide_on_rank_zero(trainer, lambda: compute().state_dict(), every_rank=True)
        pl_module.set_pruning_mask(PruningMask.from_state_dict(state).to(pl_module.device))

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        mask = self.classifier(pl_module).pruning_mask
        metrics = {"prune/sparsity": 0.0 if mask is None else mask.sparsity()}
        if self.log_layers and mask is not None:
            metrics.update({f"prune/layer/{name}": value for name, value in mask.layer_sparsity().items()})
        self.log_metrics(trainer, metrics)
