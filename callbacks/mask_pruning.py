"""Shared base of the unstructured pruning callbacks: options, mask installation, logging, stages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from callbacks.evaluation import evaluate_on_validation
from lit_prune.module import ImageClassifier
from lit_prune.pruning import PruningMask
from lit_prune.pruning.unstructured import UnstructuredPruner

__all__ = ["MaskPruningCallback"]


class MaskPruningCallback(Callback):
    """Base class: turns YAML options into an ``UnstructuredPruner`` and installs its masks.

    The mask lives in the ``ImageClassifier`` (which checkpoints it and keeps pruned weights at
    zero); subclasses decide *when* to prune. A new mask is computed on rank 0 and broadcast, so
    every DDP rank holds the same one.

    Args:
        scope: ``"global"`` or ``"layerwise"``.
        score: ``"magnitude"`` or ``"random"``.
        layer_sparsity: Optional name pattern to final sparsity (per-layer targets).
        include: Name patterns of parameters to prune (conv and linear weights when None).
        exclude: Name patterns of parameters to keep dense, e.g. ``["conv1.weight", "fc.weight"]``.
        include_bias: Also prune biases.
        include_norm: Also prune normalisation scales.
        seed: Seed of random scores.
        eval_batches: Validation batches used to measure a stage (the trainer's limit when None).
        log_layers: Log each layer's sparsity as ``prune/layer/<name>`` every epoch.
    """

    def __init__(
        self,
        scope: str = "global",
        score: str = "magnitude",
        layer_sparsity: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        include_bias: bool = False,
        include_norm: bool = False,
        seed: int = 0,
        eval_batches: int | None = None,
        log_layers: bool = True,
    ) -> None:
        if eval_batches is not None and eval_batches < 1:
            raise ValueError(f"eval_batches must be >= 1 or null (all validation batches), got {eval_batches}")
        self.pruner = UnstructuredPruner(
            scope=scope,
            score=score,
            layer_sparsity=dict(layer_sparsity) if layer_sparsity else None,
            include=list(include) if include else None,
            exclude=list(exclude) if exclude else None,
            include_bias=include_bias,
            include_norm=include_norm,
            seed=seed,
        )
        self.eval_batches = eval_batches
        self.log_layers = log_layers

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not isinstance(pl_module, ImageClassifier):
            raise TypeError(f"{type(self).__name__} works with lit_prune's ImageClassifier, got {type(pl_module).__name__}")
        self.pruner.parameters(pl_module.network)

    def install_mask(self, trainer: Trainer, pl_module: ImageClassifier, mask: PruningMask) -> None:
        """Broadcasts ``mask`` from rank 0 and installs it in the module."""
        state = trainer.strategy.broadcast(mask.state_dict(), src=0)
        pl_module.set_pruning_mask(PruningMask.from_state_dict(state).to(pl_module.device))

    def record(self, trainer: Trainer, pl_module: ImageClassifier, name: str, **values: Any) -> dict[str, Any]:
        """Measures validation accuracy now and records it as a stage of the run."""
        metrics = evaluate_on_validation(trainer, pl_module, self.eval_batches)
        return pl_module.record_stage(name, **metrics, **values)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        mask = pl_module.pruning_mask
        sparsity = 0.0 if mask is None else mask.sparsity()
        pl_module.log("prune/sparsity", sparsity, on_epoch=True, sync_dist=False)
        if self.log_layers and mask is not None:
            for name, value in mask.layer_sparsity().items():
                pl_module.log(f"prune/layer/{name}", value, on_epoch=True, sync_dist=False)
