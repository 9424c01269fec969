"""``SensitivityAnalysis``: per-layer sensitivity sweep, per-layer sparsity allocation, pruning, fine-tuning."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from callbacks.evaluation import evaluate_on_validation
from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import (
    PruningMask,
    layerwise_prune_mask,
    magnitude_scores,
)
from lit_prune.pruning.sensitivity import (
    DEFAULT_SENSITIVITY_SPARSITIES,
    SensitivityResult,
    allocate_layer_sparsity,
    predict_metric,
    sensitivity_sweep,
)
from lit_prune.pruning.unstructured import restrict_mask
from lit_prune.report.sensitivity_plot import plot_sensitivity, sensitivity_figure
from lit_prune.validation import check_fraction_levels, check_int, check_pattern_fractions, check_sparsity

__all__ = ["SENSITIVITY_FIGURE", "SENSITIVITY_JSON", "SensitivityAnalysis"]

SENSITIVITY_JSON = "sensitivity.json"
"""The curves (``SensitivityResult.to_dict``), the allocation and the sparsity reached."""

SENSITIVITY_FIGURE = "sensitivity.png"
"""One curve per layer: validation top-1 against that layer's sparsity."""


class SensitivityAnalysis(MaskPruningCallback):
    """Measures each layer's pruning sensitivity, allocates per-layer sparsity, prunes, then fine-tunes.

    The layer-by-layer sensitivity analysis of Han et al. 2015 ("Learning both Weights and
    Connections for Efficient Neural Networks", Fig. 6) and Li et al. 2017 ("Pruning Filters
    for Efficient ConvNets"). At the start of epoch ``at_epoch`` (default 0: before the first
    training step, so with a trained network loaded through ``network_kwargs.checkpoint_path``
    the whole fit is fine-tuning):

    1. each selected layer alone is pruned by magnitude to each of ``sparsities``, validation
       top-1 is measured on ``eval_batches`` batches (``evaluate_on_validation``), and the layer
       is restored bitwise (``lit_prune.pruning.sensitivity.sensitivity_sweep``);
    2. ``sensitivity.json`` and ``sensitivity.png`` are written into the run directory
       (``trainer.log_dir``; rank 0 only, atomically) and the figure is logged to TensorBoard
       as ``sensitivity/curves``;
    3. the per-layer sparsity is the allocation that reaches ``target_sparsity`` over the
       selected weights with the least predicted accuracy loss, accounting for layer sizes
       (``allocate_layer_sparsity``), or the user's ``layer_sparsity``;
    4. each layer is pruned by magnitude to its sparsity and the mask installed; the remaining
       epochs fine-tune with the mask enforced.

    Stages ``baseline``, ``pruned`` (with ``target_sparsity`` and ``predicted_val_top1``) and, at
    the end of training, ``fine_tuned`` are recorded. The sweep runs on every DDP rank (the
    evaluations are collective and their results identical); rank 0's mask is broadcast. A
    resumed run does not repeat the sweep: whether it ran and the allocation are in this
    callback's state, and the mask comes back with the module's checkpoint.

    Args:
        target_sparsity: Global sparsity over the selected weights to allocate, in (0, 1); at
            most the highest of ``sparsities`` (curves are not extrapolated).
        layer_sparsity: Instead of the allocation, name pattern (``fnmatch``) to sparsity; the
            first matching pattern wins and unmatched layers stay dense.
        sparsities: Sparsities probed per layer, each in [0, 1).
        at_epoch: Epoch at whose start the analysis and pruning happen.
        **kwargs: Options of ``MaskPruningCallback`` that choose the weights (include, exclude,
            include_bias, include_norm), log_layers, and eval_batches (the validation batches of
            every evaluation of the sweep and of each stage).

    Raises:
        ValueError: If both or neither of ``target_sparsity`` and ``layer_sparsity`` are given,
            or an option is out of range.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("target_sparsity", "layer_sparsity", "at_epoch")
    state_defaults: ClassVar[dict[str, Any]] = {"done": False, "allocation": None}

    def __init__(
        self,
        target_sparsity: float | None = None,
        layer_sparsity: Mapping[str, float] | None = None,
        sparsities: Sequence[float] = DEFAULT_SENSITIVITY_SPARSITIES,
        at_epoch: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope="global", score="magnitude", pattern=None, layer_sparsity=None, seed=0, **kwargs)
        if (target_sparsity is None) == (layer_sparsity is None):
            raise ValueError(
                "SensitivityAnalysis needs exactly one of target_sparsity (allocated from the sweep) "
                "and layer_sparsity (given per layer)"
            )
        self.sparsities = check_fraction_levels(sparsities, "sparsities", DEFAULT_SENSITIVITY_SPARSITIES)
        if self.sparsities[-1] == 0.0:
            raise UserError(f"sparsities must include one above 0, got {list(sparsities)}")
        self.target_sparsity = None if target_sparsity is None else check_sparsity(target_sparsity, "target_sparsity")
        if self.target_sparsity is not None and not 0.0 < self.target_sparsity <= self.sparsities[-1]:
            raise ValueError(
                f"target_sparsity must be in (0, {self.sparsities[-1]}] (the highest probed sparsity, since the "
                f"curves are not extrapolated), got {self.target_sparsity}"
            )
        self.layer_sparsity = (
            None
            if layer_sparsity is None
            else check_pattern_fractions(layer_sparsity, "layer_sparsity", "{'features.*': 0.8, 'classifier.*': 0.9}")
        )
        self.at_epoch = check_int(at_epoch, "at_epoch", 0)

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.target_sparsity is not None:
            return f"sensitivity-allocated layerwise magnitude {self.target_sparsity:.0%}"
        return f"layerwise magnitude with given per-layer sparsity ({len(self.layer_sparsity)} patterns)"

    @override
    def has_pruned(self) -> bool:
        return self.done

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.check_epochs_before_end(trainer, [self.at_epoch], "at_epoch", "it prunes at the start of that epoch")

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.done and trainer.current_epoch >= self.at_epoch:
            self.analyse_and_prune(trainer, self.classifier(pl_module))

    def analyse_and_prune(self, trainer: Trainer, pl_module: ImageClassifier) -> SensitivityResult:
        """Runs the sweep, writes its files, allocates, prunes and records the stages.

        Args:
            trainer: The running trainer (validation data, loggers, run directory).
            pl_module: The module to analyse and prune.

        Returns:
            The sensitivity curves.
        """
        network = pl_module.network
        params = self.pruner.parameters(network)
        current = restrict_mask(pl_module.pruning_mask, params)
        result = sensitivity_sweep(
            network,
            params,
            lambda _: evaluate_on_validation(trainer, pl_module, self.eval_batches)["val_top1"],
            self.sparsities,
            current_mask=current,
            metric="val_top1",
        )
        if self.layer_sparsity is not None:
            targets: Mapping[str, float] = self.layer_sparsity
        else:
            self.allocation = allocate_layer_sparsity(result, self.target_sparsity)
            targets = {_escape_pattern(name): sparsity for name, sparsity in self.allocation.items()}
        mask = layerwise_prune_mask(magnitude_scores(params), targets, current)
        predicted = _predicted_metric(result, mask)
        run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            self._write_outputs(trainer, run_dir, result, mask, predicted)
        self.record(trainer, pl_module, "baseline")
        self.install_mask(trainer, pl_module, lambda: mask)
        self.done = True
        self.record(
            trainer,
            pl_module,
            "pruned",
            target_sparsity=self.target_sparsity,
            selected_sparsity=mask.sparsity(),
            predicted_val_top1=predicted,
        )
        return result

    def _write_outputs(
        self, trainer: Trainer, run_dir: Path, result: SensitivityResult, mask: PruningMask, predicted: float | None
    ) -> None:
        """Writes ``sensitivity.json`` and ``sensitivity.png`` and logs the figure (rank 0 only)."""
        data: dict[str, Any] = {
            **result.to_dict(),
            "sparsities": self.sparsities,
            "eval_batches": self.eval_batches,
            "epoch": trainer.current_epoch,
            "target_sparsity": self.target_sparsity,
            "requested_layer_sparsity": self.layer_sparsity,
            "allocation": self.allocation,
            "layer_sparsity": mask.layer_sparsity(),
            "selected_sparsity": mask.sparsity(),
            "predicted_val_top1": predicted,
        }
        text = json.dumps(data, indent=2) + "\n"
        self.write_file(trainer, run_dir / SENSITIVITY_JSON, lambda path: path.write_text(text))
        self.write_file(trainer, run_dir / SENSITIVITY_FIGURE, lambda path: plot_sensitivity(result, path))
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure("sensitivity/curves", sensitivity_figure(result), trainer.global_step)
        rank_zero_info(f"SensitivityAnalysis: wrote {run_dir / SENSITIVITY_JSON} and {run_dir / SENSITIVITY_FIGURE}")


def _predicted_metric(result: SensitivityResult, mask: PruningMask) -> float | None:
    """Validation top-1 the curves predict for the mask, or None beyond the probed sparsities."""
    layers = mask.layer_sparsity()
    if any(sparsity > result.curves[name][-1][0] + 1e-9 for name, sparsity in layers.items()):
        return None
    return predict_metric(result, layers)


def _escape_pattern(name: str) -> str:
    """Escapes fnmatch's special characters so a parameter name matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
