"""``ChannelRegressionPruning``: LASSO channel selection and least-squares reconstruction, then fine-tuning."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from typing_extensions import override

from callbacks.base import PruningCallback
from lit_prune.module import ImageClassifier
from lit_prune.profiling import count_macs, measure_latency, measure_memory
from lit_prune.pruning import PruningMask
from lit_prune.pruning.parameters import parameter_count
from lit_prune.pruning.regression_pruning import (
    RegressionPruningResult,
    channel_ratios_from_sensitivity,
    regression_channel_prune_,
    resolve_channel_ratios,
)
from lit_prune.pruning.regression_pruning.layers import check_channel_ratio
from lit_prune.pruning.sensitivity import SensitivityResult
from lit_prune.pruning.unstructured import UnstructuredPruner, restrict_mask
from lit_prune.validation import check_bool, check_file, check_int, check_pattern_fractions, check_sparsity

__all__ = ["REGRESSION_REPORT_FILE", "ChannelRegressionPruning"]

REGRESSION_REPORT_FILE = "regression_pruning.json"
"""Written into the run directory: ratios, per-layer errors and timings, keep lists."""

_CHANNEL_FRACTION_EXAMPLE = "{'features.*': 0.5, 'features.4*': 0.7}"
_RATIO_MEANING = "the fraction of input channels to remove"


class ChannelRegressionPruning(PruningCallback):
    """Prunes channels of a trained network by regression once, then lets the run fine-tune it.

    He, Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV):
    layer by layer, in network order, the input channels of a convolution are chosen by LASSO
    regression on calibration feature maps and the kept channels' weights refitted by least
    squares so that the layer's output matches the original network's, on inputs produced by
    the network already pruned before it; the pruned channels are then physically removed from
    the layer and its producer (output channels, batch norm). The algorithm is
    :func:`lit_prune.pruning.regression_pruning.regression_channel_prune_`; which layers it
    prunes: every convolution of VGG after the first (the first one's input is the image), and
    the second convolution of every ResNet basic block (block-internal channels; residual
    streams stay).

    The callback runs at the start of fitting (``on_train_start``), or at the start of epoch
    ``start_epoch`` to prune a model trained in the earlier epochs of the same run. Start from a
    trained model, e.g. ``model.network_kwargs.checkpoint_path`` pointing at a baseline run's
    ``last.ckpt``. The rest of the run fine-tunes the shrunken network with the module's loss
    and optimizer (which is rebuilt for the new parameters; the LR schedule continues). Stages
    ``baseline`` (before pruning), ``pruned`` (no fine-tuning yet) and ``fine_tuned`` (end of
    training) are recorded with validation accuracy, parameter count and, with
    ``profile_stages``, MACs per image, latency and peak memory of one calibration batch (on
    global rank 0, broadcast to the others), so the report shows what the pruning saved;
    ``pruned`` also carries the per-layer errors and timings, and the run directory gets
    ``regression_pruning.json`` with everything. The surgery goes through
    ``ImageClassifier.apply_surgery``, so checkpoints of the run reload strictly.

    DDP: global rank 0 runs the whole regression on a copy of the network, from calibration
    batches drawn from the data module's unsharded training loader; the keep lists and the
    resulting weights are broadcast (a failure too, :meth:`decide_on_rank_zero`), and every rank
    applies the same surgery and loads the same weights (a LASSO support computed separately on
    each rank could differ by floating-point noise, and with it the shapes). The optional linear
    mask is broadcast from rank 0 likewise, and so are the stage measurements.

    Args:
        channel_fraction: Fraction of input channels to remove, in ``[0, 1)``: one number for every
            prunable layer, or ``fnmatch`` patterns over the prunable convolutions' names to
            fractions (``{"features.*": 0.5, "features.4*": 0.7}``; later patterns override
            earlier ones; unmatched layers are not pruned). Give this or ``sensitivity_file``.
        sensitivity_file: A ``sensitivity.json`` (``SensitivityResult.to_dict`` layout) of this
            model; per-layer ratios are allocated from it for ``sensitivity_target``.
        sensitivity_target: With ``sensitivity_file``: the fraction of the prunable
            convolutions' weights to remove, in ``[0, 1)``.
        calibration_batches: Training batches (evaluation transform) used for the regression.
        positions_per_image: Output positions sampled per image and layer (10 in the paper).
        start_epoch: Epoch at whose start the network is pruned (0: at the start of fitting).
        linear_sparsity: Also prune this fraction of every linear layer's weights by magnitude
            (unstructured, per layer, through the module's mask); ``None`` leaves them dense.
        max_lasso_fits: Upper bound on the LASSO problems solved per layer.
        seed: Seed of the sampled positions.
        profile_stages: Measure MACs, latency and peak memory at each stage.
        **kwargs: Options of ``PruningCallback`` (eval_batches).

    Raises:
        ValueError: If an option is out of range, or both or neither of ``channel_fraction``
            and ``sensitivity_file`` are given.
        TypeError: If ``channel_fraction`` has the wrong type.
        FileNotFoundError: If ``sensitivity_file`` does not exist.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("channel_fraction", "sensitivity_file", "sensitivity_target")
    state_defaults: ClassVar[dict[str, Any]] = {"done": False, "removed_parameter_fraction": None}

    def __init__(
        self,
        channel_fraction: float | dict[str, float] | None = None,
        sensitivity_file: str | None = None,
        sensitivity_target: float | None = None,
        calibration_batches: int = 10,
        positions_per_image: int = 10,
        start_epoch: int = 0,
        linear_sparsity: float | None = None,
        max_lasso_fits: int = 40,
        seed: int = 0,
        profile_stages: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (channel_fraction is None) == (sensitivity_file is None):
            raise ValueError(
                "give exactly one of channel_fraction (one fraction or pattern -> fraction of input channels to "
                "remove) and sensitivity_file (a sensitivity.json with sensitivity_target)"
            )
        if (sensitivity_file is None) != (sensitivity_target is None):
            raise ValueError("sensitivity_target goes with sensitivity_file, and sensitivity_file needs it")
        self.channel_fraction: float | dict[str, float] | None = None
        if isinstance(channel_fraction, Mapping):
            self.channel_fraction = check_pattern_fractions(
                channel_fraction, "channel_fraction", _CHANNEL_FRACTION_EXAMPLE, meaning=_RATIO_MEANING
            )
        elif channel_fraction is not None:
            self.channel_fraction = check_channel_ratio(channel_fraction, "channel_fraction")
        self.sensitivity = _read_sensitivity(sensitivity_file) if sensitivity_file is not None else None
        self.sensitivity_file = sensitivity_file
        self.sensitivity_target = (
            None if sensitivity_target is None else check_sparsity(sensitivity_target, "sensitivity_target")
        )
        self.calibration_batches = check_int(calibration_batches, "calibration_batches", 1)
        self.positions_per_image = check_int(positions_per_image, "positions_per_image", 1)
        self.start_epoch = check_int(start_epoch, "start_epoch", 0)
        self.max_lasso_fits = check_int(max_lasso_fits, "max_lasso_fits", 2)
        self.profile_stages = check_bool(profile_stages, "profile_stages")
        self.linear_sparsity = None if linear_sparsity is None else check_sparsity(linear_sparsity, "linear_sparsity")
        self.seed = seed
        self.layer_ratios: dict[str, float] = {}

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        if self.removed_parameter_fraction is not None:
            amount = f"{self.removed_parameter_fraction:.0%} of parameters removed"
        elif self.sensitivity is not None:
            amount = f"ratios from sensitivity for {self.sensitivity_target:.0%} of conv weights"
        elif isinstance(self.channel_fraction, float):
            amount = f"{self.channel_fraction:.0%} of input channels per layer"
        else:
            amount = "per-layer channel ratios"
        linear = "" if self.linear_sparsity is None else f" + linear layers {self.linear_sparsity:.0%} unstructured"
        return f"regression channel pruning (LASSO + least squares, He et al. 2017), {amount}{linear}"

    @override
    def has_pruned(self) -> bool:
        return self.done

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        network = self.classifier(pl_module).network
        if self.sensitivity is not None:
            assert self.sensitivity_target is not None
            self.layer_ratios = channel_ratios_from_sensitivity(network, self.sensitivity, self.sensitivity_target)
        else:
            assert self.channel_fraction is not None
            self.layer_ratios = resolve_channel_ratios(network, self.channel_fraction)
        if stage == "fit":
            self.check_epochs_before_end(
                trainer, [self.start_epoch], "start_epoch", "it prunes at its start and the epochs after it fine-tune"
            )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._prune_if_due(trainer, self.classifier(pl_module))

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._prune_if_due(trainer, self.classifier(pl_module))

    @override
    def record(
        self, trainer: Trainer, pl_module: ImageClassifier, name: str, batch: Tensor | None = None, **values: Any
    ) -> dict[str, Any]:
        """Records a stage with the parameter count and, with ``profile_stages``, the cost of one batch.

        Args:
            trainer: The running trainer.
            pl_module: The module.
            name: The stage.
            batch: The calibration batch to profile on; the first training batch when None.
            **values: Further entries of the stage.
        """
        if batch is None:
            batch = self._calibration_batches(trainer, pl_module, 1)[0]
        profile = self.decide_on_rank_zero(trainer, lambda: _profile(pl_module.network, batch, self.profile_stages))
        return super().record(trainer, pl_module, name, **profile, **values)

    def _prune_if_due(self, trainer: Trainer, pl_module: ImageClassifier) -> None:
        if self.done or trainer.current_epoch < self.start_epoch:
            return
        batches = self._calibration_batches(trainer, pl_module, self.calibration_batches)
        self.record(trainer, pl_module, "baseline", batches[0])
        payload = self.decide_on_rank_zero(trainer, lambda: self._regression(pl_module, batches))
        payload["state"] = {name: tensor.to(pl_module.device) for name, tensor in payload["state"].items()}
        pl_module.apply_surgery(payload["keep"], kinds=("channels",))
        pl_module.network.load_state_dict(payload["state"])
        if pl_module.pruning_mask is not None:
            pl_module.set_pruning_mask(pl_module.pruning_mask)
        if self.linear_sparsity is not None:
            self._prune_linear_layers(trainer, pl_module)
        summary = payload["result"]
        self.removed_parameter_fraction = summary["removed_parameter_fraction"]
        self.done = True
        layers = {
            layer["layer"]: {
                key: layer[key]
                for key in (
                    "channels",
                    "kept",
                    "samples",
                    "error_before",
                    "error_naive",
                    "error_lasso",
                    "error_reconstructed",
                    "selection_seconds",
                    "reconstruction_seconds",
                )
            }
            for layer in summary["layers"]
        }
        stage = self.record(
            trainer,
            pl_module,
            "pruned",
            batches[0],
            params_removed_fraction=summary["removed_parameter_fraction"],
            pruning_seconds=payload["seconds"],
            regression_layers=layers,
        )
        self._log(trainer, summary)
        self._write_report(trainer, summary, stage)

    def _regression(self, pl_module: ImageClassifier, batches: list[Tensor]) -> dict[str, Any]:
        """Runs the regression on a copy of the network: keep lists, weights (on the CPU), results, seconds."""
        started = time.perf_counter()
        working = copy.deepcopy(pl_module.network)
        result = regression_channel_prune_(
            working,
            pl_module.network,
            batches,
            self.layer_ratios,
            positions_per_image=self.positions_per_image,
            seed=self.seed,
            max_lasso_fits=self.max_lasso_fits,
        )
        return _payload(working, result, time.perf_counter() - started)

    def _prune_linear_layers(self, trainer: Trainer, pl_module: ImageClassifier) -> None:
        assert self.linear_sparsity is not None
        network = pl_module.network
        names = [f"{name}.weight" for name, module in network.named_modules() if isinstance(module, nn.Linear)]
        if not names:
            raise ValueError(f"linear_sparsity is set but {type(network).__name__} has no linear layer")
        pruner = UnstructuredPruner(scope="layer", include=names)
        current = restrict_mask(pl_module.pruning_mask, names)
        state = self.decide_on_rank_zero(
            trainer, lambda: pruner.mask(network, self.linear_sparsity, current_mask=current).state_dict()
        )
        pl_module.set_pruning_mask(PruningMask.from_state_dict(state).to(pl_module.device))

    def _calibration_batches(self, trainer: Trainer, pl_module: ImageClassifier, count: int) -> list[Tensor]:
        """The images of the first ``count`` training batches, as the model sees them, on its device."""
        batches = [images for images, _ in self.training_batches(trainer, pl_module, limit=count)]
        if not batches:
            raise RuntimeError("the training data yielded no batch to calibrate the regression on")
        return batches

    def _log(self, trainer: Trainer, summary: Mapping[str, Any]) -> None:
        metrics = {"prune/params_removed_fraction": float(summary["removed_parameter_fraction"])}
        for layer in summary["layers"]:
            metrics[f"prune/regression/{layer['layer']}/error_reconstructed"] = float(layer["error_reconstructed"])
            metrics[f"prune/regression/{layer['layer']}/kept_channels"] = float(layer["kept"])
        self.log_metrics(trainer, metrics)

    def _write_report(self, trainer: Trainer, summary: Mapping[str, Any], stage: Mapping[str, Any]) -> None:
        directory = trainer.log_dir
        if directory is None:
            return
        report = {
            "method": self.describe_method(),
            "ratios": self.layer_ratios,
            "sensitivity_file": self.sensitivity_file,
            "sensitivity_target": self.sensitivity_target,
            "linear_sparsity": self.linear_sparsity,
            "calibration_batches": self.calibration_batches,
            "positions_per_image": self.positions_per_image,
            "pruned_stage": {key: value for key, value in stage.items() if key != "regression_layers"},
            **summary,
        }
        text = json.dumps(report, indent=2)
        self.write_file(trainer, Path(directory) / REGRESSION_REPORT_FILE, lambda path: path.write_text(text))


def _payload(working: nn.Module, result: RegressionPruningResult, seconds: float) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "keep": result.keep,
        "state": {name: tensor.detach().cpu() for name, tensor in working.state_dict().items()},
        "result": result.to_dict(),
    }


def _profile(network: nn.Module, batch: Tensor, enabled: bool) -> dict[str, Any]:
    """Parameter count and, when enabled, MACs per image, latency and peak memory of one batch."""
    values: dict[str, Any] = {"params": parameter_count(network)}
    if not enabled:
        return values
    macs = count_macs(network, batch)
    latency = measure_latency(network, batch, warmup=1, repeats=3)
    memory = measure_memory(network, batch)
    values.update(
        macs=macs.macs,
        latency_ms=latency.median_ms,
        peak_memory_mb=memory.peak_mb,
        profile_batch_size=int(batch.shape[0]),
    )
    return values


def _read_sensitivity(path: str) -> SensitivityResult:
    file = check_file(
        path,
        "sensitivity_file",
        "run a sensitivity sweep first (it writes sensitivity.json into its run directory) or give channel_fraction "
        "instead",
    )
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"sensitivity_file {str(file)!r} is not valid JSON: {error}") from error
    return SensitivityResult.from_dict(data)
