"""``SaliencyPruning``: SNIP, GraSP, SynFlow or magnitude pruning in stages triggered by accuracy or epoch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from callbacks.evaluation import evaluate_on_validation
from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import (
    PruningMask,
    global_prune_mask,
    magnitude_scores,
    validate_sparsity,
)
from lit_prune.pruning.saliency import (
    class_balanced_batches,
    grasp_scores,
    snip_scores,
    synflow_prune_mask,
)
from lit_prune.pruning.scoring_mode import check_bn_mode
from lit_prune.pruning.selection import DEFAULT_TIE_SEED, TIE_RULE
from lit_prune.pruning.unstructured import restrict_mask

__all__ = ["METHODS", "TRIGGERS", "SaliencyPruning", "Stage", "parse_stages"]

METHODS = ("snip", "grasp", "synflow", "magnitude")
"""Scores: SNIP (Lee et al. 2019), GraSP (Wang et al. 2020), SynFlow (Tanaka et al. 2020), |w|."""

TRIGGERS = ("init", "epoch", "val_top1")
"""When a stage fires: before training, at the start of an epoch, or once validation top-1 reaches a value."""

_DATA_METHODS = ("snip", "grasp")
_DEFAULT_SAMPLES_PER_CLASS = 10
_DEFAULT_BN_MODES = {"snip": "eval", "grasp": "train"}
"""What the authors' code does: snip-public scores in eval mode, alecwangcq/GraSP in training mode."""
_CALIBRATION_SPLITS = {"snip": 1, "grasp": 2}
"""SNIP scores one batch; GraSP's reference scores two class-grouped halves."""
_STAGE_KEYS = ("trigger", "value", "fraction", "latest_epoch")
_METRIC_KEY = "val/top1"
_METHOD_NAMES = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "magnitude": "magnitude"}


@dataclass(frozen=True)
class Stage:
    """One pruning stage: when it fires and how much of the target it reaches.

    Args:
        trigger: ``"init"``, ``"epoch"`` or ``"val_top1"``.
        value: The epoch (``epoch``) or validation top-1 fraction (``val_top1``); None for ``init``.
        fraction: Fraction of the target sparsity reached by this stage, in (0, 1].
        latest_epoch: ``val_top1`` only: fire at the start of this epoch at the latest, even
            if the accuracy was not reached; None waits for the accuracy.
    """

    trigger: str
    value: float | int | None
    fraction: float
    latest_epoch: int | None = None

    def describe(self) -> str:
        """``init``, ``epoch 5`` or ``val_top1 >= 0.4``."""
        if self.trigger == "init":
            return "init"
        if self.trigger == "epoch":
            return f"epoch {self.value}"
        return f"val_top1 >= {self.value:g}"


class SaliencyPruning(MaskPruningCallback):
    """Prunes by a saliency score, in stages that fire at initialisation, at epochs or at accuracies.

    Methods (scores over the selected weights, global across layers, computed among the
    survivors of the current mask so pruned weights stay pruned):

    - ``snip``: connection sensitivity ``|g ⊙ w|`` (Lee et al. 2019, "SNIP: Single-shot Network
      Pruning based on Connection Sensitivity");
    - ``grasp``: gradient-signal preservation ``-w ⊙ Hg`` with the logits divided by
      ``temperature`` (Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving
      Gradient Flow");
    - ``synflow``: iterative, data-free synaptic flow (Tanaka et al. 2020, "Pruning neural
      networks without any data by iteratively conserving synaptic flow");
    - ``magnitude``: ``|w|``, the baseline of the comparison.

    Stages (``stages``, a list of ``{trigger, value, fraction}``; the default is a single stage
    at initialisation) fire exactly once each, in order, and at most one per check, so the
    network trains between stages; stage ``k`` prunes the survivors down to ``fraction_k *
    target_sparsity`` of the selected weights, and the mask is frozen in between:

    - ``{trigger: init, fraction: f}`` fires in ``on_train_start``, before the first training
      step of the fit (only as the first stage);
    - ``{trigger: epoch, value: e, fraction: f}`` fires at the start of epoch ``e``;
    - ``{trigger: val_top1, value: a, fraction: f}`` fires right after the first validation
      (during ``fit``, not the sanity check) whose logged ``val/top1`` is at least ``a``, in
      ``on_validation_end``, before the checkpoint of that validation is written (so a resumed
      run neither repeats nor skips the stage); training continues with the pruned network.
      ``val/top1`` is the synchronised epoch metric of the module, identical on every DDP rank,
      and the decision is moreover broadcast from rank 0. With ``latest_epoch: e`` the stage
      also fires at the start of epoch ``e`` if the accuracy was not reached by then.

    E6 of lit-prune, GraSP from scratch to 80 %: ``stages: [{trigger: val_top1, value: 0.2,
    fraction: 0.5}, {trigger: val_top1, value: 0.4, fraction: 0.75}, {trigger: val_top1,
    value: 0.6, fraction: 1.0}]``.

    Calibration data (SNIP, GraSP) come from the training loader of the data module (its
    sampler set to the current epoch, so each stage draws afresh, identically on every rank),
    moved to the module's device and passed through ``transform_batch(train=False)``: the
    scores see the normalised images without random crops or flips, so they do not depend on
    augmentation draws (GraSP's reference draws augmented images). By default 10 samples of
    every class are drawn and grouped by class (``class_balanced_batches``, as GraSP's
    reference code draws them): GraSP scores them as two halves, in the reference's order
    (``g`` over both halves, then ``Hg`` over both), SNIP as one batch (snip-public scores one
    random training batch of 100, the size of the default sample on CIFAR-10; drawing it
    class-balanced is lit-prune's choice, shared with GraSP); ``calibration_batches`` takes
    plain loader batches instead. Every rank computes the scores on the same data (a
    forward pass with batch norm in training mode may need all ranks, e.g. with synchronised
    batch norm) and rank 0's mask is broadcast and installed.

    Scores are deterministic: dropout and drop-path are off while scoring, and batch norm uses
    running or batch statistics as ``bn_mode`` says; by default what the authors' code does,
    ``eval`` for SNIP (namhoonlee/snip-public) and ``train`` for GraSP (alecwangcq/GraSP).
    Exactly ``round(s·N)`` weights are pruned, ties at the cut broken by a seeded random key
    that does not depend on layer order (``lit_prune.pruning.selection``).

    Each stage records ``stage<k>/pruned`` (epoch, trigger, validation top-1 at the trigger,
    target and achieved sparsity, validation accuracy after pruning, and ``scoring``: the
    settings the mask was made with, see :meth:`scoring_settings`); the end of training
    records ``fine_tuned``. The number of stages done is saved in this callback's state.

    Args:
        method: ``"snip"``, ``"grasp"``, ``"synflow"`` or ``"magnitude"``.
        target_sparsity: Sparsity of the selected weights after the last stage, in (0, 1).
        stages: The stages, as mappings with keys ``trigger``, ``value``, ``fraction`` and
            optionally ``latest_epoch``. Fractions must increase and the last must be 1.0;
            epoch values must increase, and so must accuracy values.
        samples_per_class: Class-balanced calibration samples per class (SNIP, GraSP); 10 when
            neither this nor ``calibration_batches`` is given.
        calibration_batches: Use this many training batches as calibration data instead.
        temperature: GraSP's logit temperature (200 in the paper's code).
        synflow_iterations: SynFlow's score-and-prune rounds per stage (100 in the paper).
        bn_mode: SNIP, GraSP: ``"eval"`` (batch norm on its running statistics) or ``"train"``
            (on the statistics of each calibration batch); dropout is off in both. ``None``
            takes the method's reference setting: ``eval`` for SNIP, ``train`` for GraSP.
        include: Name patterns of parameters to prune (conv and linear weights when None).
        exclude: Name patterns of parameters to keep dense.
        include_bias: Also prune biases.
        include_norm: Also prune normalisation scales.
        eval_batches: Validation batches used to measure a stage (the trainer's limit when None).
        log_layers: Log each layer's sparsity as ``prune/layer/<name>`` every epoch.

    Raises:
        ValueError: If an option is out of range, a stage is malformed, or the stages are not
            in increasing order.
        UserError: If ``bn_mode`` is not ``eval``/``train`` or is given for a method without data.
    """

    def __init__(
        self,
        method: str = "grasp",
        target_sparsity: float = 0.8,
        stages: Sequence[Mapping[str, Any]] | None = None,
        samples_per_class: int | None = None,
        calibration_batches: int | None = None,
        temperature: float = 200.0,
        synflow_iterations: int = 100,
        bn_mode: str | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        include_bias: bool = False,
        include_norm: bool = False,
        eval_batches: int | None = None,
        log_layers: bool = True,
    ) -> None:
        super().__init__(
            scope="global",
            score="magnitude",
            include=include,
            exclude=exclude,
            include_bias=include_bias,
            include_norm=include_norm,
            eval_batches=eval_batches,
            log_layers=log_layers,
        )
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        self.target_sparsity = validate_sparsity(target_sparsity, "target_sparsity")
        if self.target_sparsity == 0.0:
            raise ValueError("target_sparsity must be in (0, 1): a pruning callback prunes something")
        self.stages = parse_stages(stages)
        self.samples_per_class, self.calibration_batches = _calibration_options(
            method, samples_per_class, calibration_batches
        )
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise ValueError(f"temperature must be a positive number (200 in GraSP's code), got {temperature!r}")
        self.temperature = float(temperature)
        self.synflow_iterations = _positive_int(synflow_iterations, "synflow_iterations")
        self.bn_mode = _bn_mode_option(method, bn_mode)
        self.stages_done = 0
        self._state_key = self._generate_state_key(
            method=method,
            target_sparsity=self.target_sparsity,
            stages=tuple((s.trigger, s.value, s.fraction, s.latest_epoch) for s in self.stages),
        )

    @property
    def state_key(self) -> str:
        return self._state_key

    def describe_method(self) -> str:
        """A short description of the method for reports."""
        name = _METHOD_NAMES[self.method]
        if len(self.stages) == 1:
            when = "at init" if self.stages[0].trigger == "init" else f"at {self.stages[0].describe()}"
            return f"{name} {self.target_sparsity:.0%} {when}"
        triggers = ", ".join(f"{s.describe()} -> {s.fraction * self.target_sparsity:.0%}" for s in self.stages)
        return f"{name} {self.target_sparsity:.0%} in {len(self.stages)} stages ({triggers})"

    def scoring_settings(self) -> dict[str, Any]:
        """How this callback's masks are made, as recorded in each stage's ``scoring`` entry.

        Returns:
            ``score`` and the tie rule (``tie_rule``, ``tie_seed``); for SNIP and GraSP also
            ``bn_mode``, ``dropout`` (always ``"off"``), ``calibration`` (``class_balanced``
            or ``loader_batches``), ``samples_per_class`` or ``calibration_batches``, and
            ``batches`` (how many batches the scores are accumulated over); GraSP adds
            ``temperature``; SynFlow ``bn_mode`` (``eval``), ``iterations`` and ``dtype``.
        """
        settings: dict[str, Any] = {"score": self.method}
        if self.method in _DATA_METHODS:
            settings.update(bn_mode=self.bn_mode, dropout="off")
            if self.calibration_batches is None:
                settings.update(
                    calibration="class_balanced",
                    samples_per_class=self.samples_per_class,
                    batches=_CALIBRATION_SPLITS[self.method],
                )
            else:
                settings.update(
                    calibration="loader_batches",
                    calibration_batches=self.calibration_batches,
                    batches=self.calibration_batches,
                )
            if self.method == "grasp":
                settings["temperature"] = self.temperature
        elif self.method == "synflow":
            settings.update(bn_mode="eval", iterations=self.synflow_iterations, dtype="float64")
        settings.update(tie_rule=TIE_RULE, tie_seed=DEFAULT_TIE_SEED)
        return settings

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if self.method in _DATA_METHODS and trainer.datamodule is None:
            raise ValueError(
                f"SaliencyPruning(method={self.method!r}) draws calibration data from a data module; "
                "pass a LightningDataModule to fit (or use method 'synflow' or 'magnitude')"
            )
        if any(s.trigger == "val_top1" for s in self.stages) and trainer.limit_val_batches == 0:
            raise ValueError(
                "SaliencyPruning has val_top1 triggers but validation is disabled (limit_val_batches=0); "
                "enable validation or use epoch triggers"
            )
        if trainer.max_epochs is None or trainer.max_epochs < 0:
            return
        late = [
            epoch
            for s in self.stages
            for epoch in (s.value if s.trigger == "epoch" else None, s.latest_epoch)
            if epoch is not None and epoch >= trainer.max_epochs
        ]
        if late:
            raise ValueError(
                f"SaliencyPruning has stages at epochs {late}, but trainer.max_epochs is {trainer.max_epochs}: "
                "epoch triggers and latest_epoch fire at the start of an epoch, so they must be < max_epochs"
            )

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        stage = self._next_stage()
        if stage is not None and stage.trigger == "init":
            self._fire(trainer, pl_module, "init", self._accuracy_now(trainer, pl_module))

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        stage = self._next_stage()
        if stage is None:
            return
        epoch = trainer.current_epoch
        if stage.trigger == "epoch" and epoch >= stage.value:
            self._fire(trainer, pl_module, "epoch", self._accuracy_now(trainer, pl_module))
        elif stage.trigger == "val_top1" and stage.latest_epoch is not None and epoch >= stage.latest_epoch:
            self._fire(trainer, pl_module, "latest_epoch", self._accuracy_now(trainer, pl_module))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        stage = self._next_stage()
        if stage is None or stage.trigger != "val_top1" or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if _METRIC_KEY not in trainer.callback_metrics:
            raise RuntimeError(
                f"SaliencyPruning's val_top1 trigger needs the logged metric {_METRIC_KEY!r}, but the module "
                f"logged only {sorted(trainer.callback_metrics)}"
            )
        accuracy = trainer.strategy.broadcast(float(trainer.callback_metrics[_METRIC_KEY]), src=0)
        if accuracy >= stage.value:
            self._fire(trainer, pl_module, "val_top1", accuracy)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        pl_module.log("prune/stage", float(self.stages_done), on_epoch=True, sync_dist=False)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert isinstance(pl_module, ImageClassifier)
        if self.stages_done < len(self.stages):
            pending = ", ".join(s.describe() for s in self.stages[self.stages_done :])
            rank_zero_warn(
                f"SaliencyPruning fired {self.stages_done} of {len(self.stages)} stages; never triggered: {pending}. "
                f"The model ends at sparsity {self._sparsity(pl_module):.4f} instead of {self.target_sparsity}; "
                "lower the accuracy thresholds, add latest_epoch, or train longer"
            )
        if self.stages_done:
            self.record(trainer, pl_module, "fine_tuned")

    def state_dict(self) -> dict[str, Any]:
        return {"stages_done": self.stages_done}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stages_done = int(state_dict["stages_done"])

    def _next_stage(self) -> Stage | None:
        return self.stages[self.stages_done] if self.stages_done < len(self.stages) else None

    def _accuracy_now(self, trainer: Trainer, pl_module: ImageClassifier) -> float:
        return evaluate_on_validation(trainer, pl_module, self.eval_batches)["val_top1"]

    def _sparsity(self, pl_module: ImageClassifier) -> float:
        mask = restrict_mask(pl_module.pruning_mask, self.pruner.parameters(pl_module.network))
        return 0.0 if mask is None else mask.sparsity()

    def _fire(self, trainer: Trainer, pl_module: ImageClassifier, fired_by: str, accuracy: float) -> None:
        index = self.stages_done
        stage = self.stages[index]
        sparsity = stage.fraction * self.target_sparsity
        with torch.inference_mode(False), torch.enable_grad():
            self.install_mask(trainer, pl_module, self.compute_mask(trainer, pl_module, sparsity))
        self.stages_done = index + 1
        self.record(
            trainer,
            pl_module,
            f"stage{index + 1}/pruned",
            method=self.method,
            trigger=stage.describe(),
            fired_by=fired_by,
            val_top1_at_trigger=accuracy,
            target_sparsity=sparsity,
            selected_sparsity=self._sparsity(pl_module),
            scoring=self.scoring_settings(),
        )

    def compute_mask(self, trainer: Trainer, pl_module: ImageClassifier, sparsity: float) -> PruningMask:
        """Scores the selected weights with the method and prunes the survivors to ``sparsity``.

        Args:
            trainer: The running trainer (its data module supplies calibration data).
            pl_module: The module whose network is scored (it is left unchanged).
            sparsity: Target sparsity over the selected weights, already-pruned ones included.

        Returns:
            The mask over the selected parameters.
        """
        network = pl_module.network
        params = self.pruner.parameters(network)
        current = restrict_mask(pl_module.pruning_mask, params)
        if self.method == "magnitude":
            return global_prune_mask(magnitude_scores(params), sparsity, current)
        if self.method == "synflow":
            images, _ = next(_model_batches(trainer, pl_module))
            return synflow_prune_mask(
                network, params, tuple(images.shape[1:]), sparsity, self.synflow_iterations, current
            )
        batches = self._calibration_data(trainer, pl_module)
        if self.method == "snip":
            scores = snip_scores(network, params, batches, current_mask=current, bn_mode=self.bn_mode)
        else:
            scores = grasp_scores(
                network,
                params,
                batches,
                temperature=self.temperature,
                current_mask=current,
                bn_mode=self.bn_mode,
            )
        return global_prune_mask(scores, sparsity, current)

    def _calibration_data(self, trainer: Trainer, pl_module: ImageClassifier) -> list[tuple[Tensor, Tensor]]:
        stream = _model_batches(trainer, pl_module)
        if self.calibration_batches is not None:
            batches = list(islice(stream, self.calibration_batches))
            if len(batches) < self.calibration_batches:
                raise ValueError(
                    f"calibration_batches={self.calibration_batches}, but the training loader has only "
                    f"{len(batches)} batches"
                )
            return batches
        return class_balanced_batches(
            stream, pl_module.num_classes, self.samples_per_class, _CALIBRATION_SPLITS[self.method]
        )


def parse_stages(stages: Sequence[Mapping[str, Any]] | None) -> list[Stage]:
    """Validates the YAML stage list of ``SaliencyPruning`` (None: one stage at initialisation).

    Args:
        stages: Mappings with keys ``trigger``, ``value``, ``fraction`` and optionally
            ``latest_epoch``.

    Returns:
        The stages, in firing order.

    Raises:
        ValueError: If a stage is malformed or the stages are not increasing.
    """
    if stages is None:
        return [Stage("init", None, 1.0)]
    if isinstance(stages, (str, bytes, Mapping)) or not isinstance(stages, Sequence) or not stages:
        raise ValueError(
            "stages must be a non-empty list of {trigger, value, fraction} mappings, e.g. "
            "[{trigger: val_top1, value: 0.2, fraction: 0.5}, {trigger: val_top1, value: 0.6, fraction: 1.0}], "
            f"got {stages!r}"
        )
    parsed = [_parse_stage(index, spec) for index, spec in enumerate(stages)]
    fractions = [s.fraction for s in parsed]
    if any(b <= a for a, b in zip(fractions, fractions[1:])) or fractions[-1] != 1.0:
        raise ValueError(
            f"stage fractions must increase strictly and the last must be 1.0 (the target), got {fractions}"
        )
    if any(s.trigger == "init" for s in parsed[1:]):
        raise ValueError("an 'init' trigger fires before training, so only the first stage may have it")
    for trigger, values in (
        ("epoch", [s.value for s in parsed if s.trigger == "epoch"]),
        ("val_top1", [s.value for s in parsed if s.trigger == "val_top1"]),
        ("latest_epoch", [s.latest_epoch for s in parsed if s.latest_epoch is not None]),
    ):
        if any(b <= a for a, b in zip(values, values[1:])):
            raise ValueError(f"the {trigger} values of the stages must increase strictly, got {values}")
    return parsed


def _parse_stage(index: int, spec: Any) -> Stage:
    where = f"stages[{index}]"
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"{where} must be a mapping such as {{trigger: val_top1, value: 0.4, fraction: 0.75}}, got {spec!r}"
        )
    unknown = sorted(set(spec) - set(_STAGE_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown keys {unknown}; allowed keys: {list(_STAGE_KEYS)}")
    trigger = spec.get("trigger")
    if trigger not in TRIGGERS:
        raise ValueError(f"{where}.trigger must be one of {TRIGGERS}, got {trigger!r}")
    fraction = spec.get("fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"{where}.fraction (of the target sparsity) must be in (0, 1], got {fraction!r}")
    value = spec.get("value")
    latest_epoch = spec.get("latest_epoch")
    if trigger == "init":
        if value is not None:
            raise ValueError(f"{where}: an 'init' trigger takes no value, got {value!r}")
    elif trigger == "epoch":
        value = _non_negative_int(value, f"{where}.value (the epoch)")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"{where}.value must be a validation top-1 fraction in (0, 1] (0.2 for 20 %), got {value!r}"
        )
    if latest_epoch is not None:
        if trigger != "val_top1":
            raise ValueError(f"{where}: latest_epoch applies to 'val_top1' triggers only")
        latest_epoch = _non_negative_int(latest_epoch, f"{where}.latest_epoch")
    return Stage(trigger, value if trigger != "val_top1" else float(value), float(fraction), latest_epoch)


def _calibration_options(
    method: str, samples_per_class: int | None, calibration_batches: int | None
) -> tuple[int | None, int | None]:
    if method not in _DATA_METHODS:
        if samples_per_class is not None or calibration_batches is not None:
            raise ValueError(
                f"method {method!r} needs no calibration data; samples_per_class and calibration_batches "
                f"apply to {_DATA_METHODS} only"
            )
        return None, None
    if samples_per_class is not None and calibration_batches is not None:
        raise ValueError("give samples_per_class (class-balanced) or calibration_batches (plain batches), not both")
    if calibration_batches is not None:
        return None, _positive_int(calibration_batches, "calibration_batches")
    if samples_per_class is None:
        return _DEFAULT_SAMPLES_PER_CLASS, None
    return _positive_int(samples_per_class, "samples_per_class"), None


def _bn_mode_option(method: str, bn_mode: str | None) -> str | None:
    if method not in _DATA_METHODS:
        if bn_mode is not None:
            raise UserError(
                f"bn_mode applies to the methods that score calibration data, {list(_DATA_METHODS)}; "
                f"method {method!r} takes none (SynFlow always scores in eval mode)"
            )
        return None
    if bn_mode is None:
        return _DEFAULT_BN_MODES[method]
    return check_bn_mode(bn_mode)


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _non_negative_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _model_batches(trainer: Trainer, pl_module: LightningModule) -> Iterator[tuple[Tensor, Tensor]]:
    """Training batches as model input: on the module's device, through ``transform_batch(train=False)``."""
    datamodule = trainer.datamodule
    loader = datamodule.train_dataloader() if datamodule is not None else trainer.train_dataloader
    if loader is None:
        raise RuntimeError("SaliencyPruning needs training data: give the Trainer a datamodule or train_dataloaders")
    sampler = getattr(loader, "sampler", None)
    if callable(getattr(sampler, "set_epoch", None)):
        sampler.set_epoch(trainer.current_epoch)
    transform = getattr(datamodule, "transform_batch", None)
    for images, labels in loader:
        batch = (images.to(pl_module.device), labels.to(pl_module.device))
        yield transform(batch, train=False) if transform is not None else batch
