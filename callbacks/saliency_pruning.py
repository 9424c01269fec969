"""``SaliencyPruning``: pruning by a weight score (SNIP, GraSP, SynFlow, ...) in stages fired by accuracy or epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from callbacks.evaluation import evaluate_on_validation
from callbacks.mask_pruning import MaskPruningCallback
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import PruningMask, list_scores
from lit_prune.pruning.nm_sparsity import pattern_sparsity
from lit_prune.pruning.saliency import class_balanced_batches
from lit_prune.pruning.score_registry import Score, get_score
from lit_prune.pruning.scoring_mode import check_bn_mode
from lit_prune.pruning.selection import DEFAULT_TIE_SEED, TIE_RULE
from lit_prune.pruning.stages import Stage, parse_stages
from lit_prune.pruning.unstructured import restrict_mask
from lit_prune.validation import check_int, check_number, check_sparsity

__all__ = ["SaliencyPruning"]

_DEFAULT_SAMPLES_PER_CLASS = 10
_DEFAULT_TARGET_SPARSITY = 0.8
_METRIC_KEY = "val/top1"


class SaliencyPruning(MaskPruningCallback):
    """Prunes by a saliency score, in stages that fire at initialisation, at epochs or at accuracies.

    Scores (any registered weight score, ``lit_prune.pruning.list_scores("weights")``, or the
    import path of a user's own; global across layers, computed among the survivors of the
    current mask so pruned weights stay pruned); the callback supplies what the score declares
    it needs: calibration batches, the input shape, autograd:

    - ``snip``: connection sensitivity ``|g ⊙ w|`` (Lee et al. 2019, "SNIP: Single-shot Network
      Pruning based on Connection Sensitivity");
    - ``grasp``: gradient-signal preservation ``-w ⊙ Hg`` with the logits divided by
      ``temperature`` (Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving
      Gradient Flow");
    - ``synflow``: iterative, data-free synaptic flow (Tanaka et al. 2020, "Pruning neural
      networks without any data by iteratively conserving synaptic flow");
    - ``magnitude``: ``|w|``, the baseline of the comparison; ``random`` and ``lamp`` work too.

    Stages (``stages``, a list of ``{trigger, value, fraction_of_target}``; the default is a
    single stage at initialisation) fire exactly once each, in order, and at most one per check,
    so the network trains between stages; stage ``k`` prunes the survivors down to
    ``fraction_of_target_k * target_sparsity`` of the selected weights, and the mask is frozen in
    between:

    - ``{trigger: init, fraction_of_target: f}`` fires in ``on_train_start``, before the first
      training step of the fit (only as the first stage);
    - ``{trigger: epoch, value: e, fraction_of_target: f}`` fires at the start of epoch ``e``;
    - ``{trigger: val_top1, value: a, fraction_of_target: f}`` fires right after the first validation
      (during ``fit``, not the sanity check) whose logged ``val/top1`` is at least ``a``, in
      ``on_validation_end``, before the checkpoint of that validation is written (so a resumed
      run neither repeats nor skips the stage); training continues with the pruned network.
      ``val/top1`` is the synchronised epoch metric of the module, identical on every DDP rank,
      and the decision is moreover broadcast from rank 0. With ``latest_epoch: e`` the stage
      also fires at the start of epoch ``e`` if the accuracy was not reached by then.

    E6 of lit-prune, GraSP from scratch to 80 %: ``stages: [{trigger: val_top1, value: 0.2,
    fraction_of_target: 0.5}, {trigger: val_top1, value: 0.4, fraction_of_target: 0.75},
    {trigger: val_top1, value: 0.6, fraction_of_target: 1.0}]``.

    Calibration data (for the scores that need batches: SNIP, GraSP) come from the training
    loader of the data module (its sampler set to the current epoch, so each stage draws
    afresh, identically on every rank), moved to the module's device and passed through
    ``transform_batch(train=False)``: the scores see the normalised images without random crops
    or flips, so they do not depend on augmentation draws (GraSP's reference draws augmented
    images). By default 10 samples of every class are drawn and grouped by class
    (``class_balanced_batches``, as GraSP's reference code draws them) and cut into the score's
    ``calibration_splits`` batches: GraSP scores them as two halves, in the reference's order
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

    With ``pattern: "N:M"`` every stage keeps at most N of every M consecutive input weights
    and the last stage leaves the pruned layers exactly N:M; the target is then ``1 - N/M``.

    Each stage records ``stage<k>/pruned`` (score, epoch, trigger, validation top-1 at the trigger,
    target and achieved sparsity, validation accuracy after pruning, and ``scoring``: the
    settings the mask was made with, see :meth:`scoring_settings`); the end of training
    records ``fine_tuned``. The number of stages done is saved in this callback's state.

    Args:
        score: A weight score: ``"snip"``, ``"grasp"``, ``"synflow"``, ``"magnitude"``,
            ``"random"``, ``"lamp"``, or an import path ``package.module.function``.
        target_sparsity: Sparsity of the selected weights after the last stage, in (0, 1);
            0.8 when left out, or the pattern's ``1 - N/M`` with ``pattern``.
        pattern: ``"N:M"``, e.g. ``"2:4"``; None prunes without a pattern.
        stages: The stages, as mappings with keys ``trigger``, ``value``, ``fraction_of_target`` and
            optionally ``latest_epoch``. Fractions must increase and the last must be 1.0;
            epoch values must increase, and so must accuracy values.
        samples_per_class: Class-balanced calibration samples per class (scores that need
            batches); 10 when neither this nor ``calibration_batches`` is given.
        calibration_batches: Use this many training batches as calibration data instead.
        temperature: The logit temperature of scores that take one (GraSP; 200 in the paper's code).
        synflow_iterations: Score-and-prune rounds per stage of iterative scores (SynFlow; 100
            in the paper).
        bn_mode: Scores with a ``bn_mode`` option (SNIP, GraSP): ``"eval"`` (batch norm on its
            running statistics) or ``"train"`` (on the statistics of each calibration batch);
            dropout is off in both. ``None`` takes the score's default, its reference setting:
            ``eval`` for SNIP, ``train`` for GraSP.
        **kwargs: Options of ``MaskPruningCallback`` that choose the weights (include, exclude,
            include_bias, include_norm), log_layers and eval_batches; the selection is global.

    Raises:
        ValueError: If an option is out of range, a stage is malformed, or the stages are not
            in increasing order.
        UserError: If the score or pattern is unknown, ``bn_mode`` is not ``eval``/``train`` or
            is given for a score without that option, or the target does not match the pattern.
    """

    supplies = frozenset({"batches", "gradients", "input_shape", "seed"})
    state_key_fields: ClassVar[tuple[str, ...]] = ("score", "target_sparsity", "stages")
    state_defaults: ClassVar[dict[str, Any]] = {"stages_done": 0}

    def __init__(
        self,
        score: str = "grasp",
        target_sparsity: float | None = None,
        pattern: str | None = None,
        stages: Sequence[Mapping[str, Any]] | None = None,
        samples_per_class: int | None = None,
        calibration_batches: int | None = None,
        temperature: float = 200.0,
        synflow_iterations: int = 100,
        bn_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope="global", score=score, pattern=pattern, layer_sparsity=None, seed=0, **kwargs)
        self.score = score
        if self.pruner.nm_pattern is not None:
            target_sparsity = pattern_sparsity(self.pruner.nm_pattern, target_sparsity, "target_sparsity")
        elif target_sparsity is None:
            target_sparsity = _DEFAULT_TARGET_SPARSITY
        self.target_sparsity = check_sparsity(target_sparsity, "target_sparsity")
        if self.target_sparsity == 0.0:
            raise ValueError("target_sparsity must be in (0, 1): a pruning callback prunes something")
        self.stages = parse_stages(stages)
        scorer = self.pruner.scorer
        self.samples_per_class, self.calibration_batches = _calibration_options(
            scorer, samples_per_class, calibration_batches
        )
        self.temperature = check_number(temperature, "temperature", positive=True, meaning="200 in GraSP's code")
        self.synflow_iterations = check_int(synflow_iterations, "synflow_iterations", 1)
        self.bn_mode = _bn_mode_option(scorer, bn_mode)

    @override
    def describe_method(self) -> str:
        """A short description of the method for reports."""
        pattern = "" if self.pruner.nm_pattern is None else f" {self.pruner.nm_pattern} pattern"
        name = f"{self.pruner.scorer.label} {self.target_sparsity:.0%}{pattern}"
        if len(self.stages) == 1:
            when = "at init" if self.stages[0].trigger == "init" else f"at {self.stages[0].describe()}"
            return f"{name} {when}"
        triggers = ", ".join(
            f"{s.describe()} -> {s.fraction_of_target * self.target_sparsity:.0%}" for s in self.stages
        )
        return f"{name} in {len(self.stages)} stages ({triggers})"

    def scoring_settings(self) -> dict[str, Any]:
        """How this callback's masks are made, as recorded in each stage's ``scoring`` entry.

        Returns:
            ``score`` and the tie rule (``tie_rule``, ``tie_seed``); for scores that need
            batches (SNIP, GraSP) also ``bn_mode``, ``calibration`` (``class_balanced`` or
            ``loader_batches``), ``samples_per_class`` or ``calibration_batches``, and
            ``batches`` (how many batches the scores are accumulated over); ``temperature``
            for a score that takes one (GraSP); ``iterations`` for an iterative score
            (SynFlow); and the facts the score declares (``dropout: off`` for SNIP and GraSP,
            SynFlow's ``bn_mode: eval`` and ``dtype``); with a pattern, ``pattern``.
        """
        scorer = self.pruner.scorer
        settings: dict[str, Any] = {"score": self.score}
        if self.bn_mode is not None:
            settings["bn_mode"] = self.bn_mode
        if "batches" in scorer.needs:
            if self.calibration_batches is None:
                settings.update(
                    calibration="class_balanced",
                    samples_per_class=self.samples_per_class,
                    batches=scorer.calibration_splits,
                )
            else:
                settings.update(
                    calibration="loader_batches",
                    calibration_batches=self.calibration_batches,
                    batches=self.calibration_batches,
                )
        if "temperature" in scorer.options:
            settings["temperature"] = self.temperature
        if scorer.iterative:
            settings["iterations"] = self.synflow_iterations
        settings.update(scorer.settings)
        if self.pruner.nm_pattern is not None:
            settings["pattern"] = str(self.pruner.nm_pattern)
        settings.update(tie_rule=TIE_RULE, tie_seed=DEFAULT_TIE_SEED)
        return settings

    @override
    def has_pruned(self) -> bool:
        return self.stages_done > 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        if "batches" in self.pruner.scorer.needs and trainer.datamodule is None:
            raise ValueError(
                f"SaliencyPruning(score={self.score!r}) draws calibration data from a data module; "
                "pass a LightningDataModule to fit (or use a score that needs no batches, such as 'synflow')"
            )
        if any(s.trigger == "val_top1" for s in self.stages) and trainer.limit_val_batches == 0:
            raise ValueError(
                "SaliencyPruning has val_top1 triggers but validation is disabled (limit_val_batches=0); "
                "enable validation or use epoch triggers"
            )
        stage_epochs = [
            epoch for s in self.stages for epoch in (s.value if s.trigger == "epoch" else None, s.latest_epoch)
        ]
        self.check_epochs_before_end(
            trainer, stage_epochs, "stages", "epoch triggers and latest_epoch fire at the start of an epoch"
        )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        stage = self._next_stage()
        if stage is not None and stage.trigger == "init":
            self._fire(trainer, module, "init", self._accuracy_now(trainer, module))

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        stage = self._next_stage()
        if stage is None:
            return
        epoch = trainer.current_epoch
        if stage.trigger == "epoch" and epoch >= stage.value:
            self._fire(trainer, module, "epoch", self._accuracy_now(trainer, module))
        elif stage.trigger == "val_top1" and stage.latest_epoch is not None and epoch >= stage.latest_epoch:
            self._fire(trainer, module, "latest_epoch", self._accuracy_now(trainer, module))

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        module = self.classifier(pl_module)
        stage = self._next_stage()
        if stage is None or stage.trigger != "val_top1" or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if _METRIC_KEY not in trainer.callback_metrics:
            raise RuntimeError(
                f"SaliencyPruning's val_top1 trigger needs the logged metric {_METRIC_KEY!r}, but the module "
                f"logged only {sorted(trainer.callback_metrics)}"
            )
        accuracy = self.decide_on_rank_zero(trainer, lambda: float(trainer.callback_metrics[_METRIC_KEY]))
        if accuracy >= stage.value:
            self._fire(trainer, module, "val_top1", accuracy)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self.log_metrics(trainer, {"prune/stage": float(self.stages_done)})

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.stages_done < len(self.stages):
            pending = ", ".join(s.describe() for s in self.stages[self.stages_done :])
            rank_zero_warn(
                f"SaliencyPruning fired {self.stages_done} of {len(self.stages)} stages; never triggered: {pending}. "
                f"The model ends at sparsity {self._sparsity(self.classifier(pl_module)):.4f} instead of "
                f"{self.target_sparsity}; lower the accuracy thresholds, add latest_epoch, or train longer"
            )
        super().on_train_end(trainer, pl_module)

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
        sparsity = stage.fraction_of_target * self.target_sparsity
        self.install_mask(trainer, pl_module, lambda: self._scored_mask(trainer, pl_module, sparsity))
        self.stages_done = index + 1
        self.record(
            trainer,
            pl_module,
            f"stage{index + 1}/pruned",
            score=self.score,
            trigger=stage.describe(),
            fired_by=fired_by,
            val_top1_at_trigger=accuracy,
            target_sparsity=sparsity,
            selected_sparsity=self._sparsity(pl_module),
            scoring=self.scoring_settings(),
        )

    def _scored_mask(self, trainer: Trainer, pl_module: ImageClassifier, sparsity: float) -> PruningMask:
        """:meth:`compute_mask`, with gradients enabled for a score that needs them (inside a no-grad hook)."""
        if "gradients" not in self.pruner.scorer.needs:
            return self.compute_mask(trainer, pl_module, sparsity)
        with torch.inference_mode(False), torch.enable_grad():
            return self.compute_mask(trainer, pl_module, sparsity)

    def compute_mask(self, trainer: Trainer, pl_module: ImageClassifier, sparsity: float) -> PruningMask:
        """Scores the selected weights with the score and prunes the survivors to ``sparsity``.

        Args:
            trainer: The running trainer (its data module supplies calibration data).
            pl_module: The module whose network is scored (it is left unchanged).
            sparsity: Target sparsity over the selected weights, already-pruned ones included.

        Returns:
            The mask over the selected parameters.
        """
        scorer = self.pruner.scorer
        inputs: dict[str, Any] = {"bn_mode": self.bn_mode}
        if "temperature" in scorer.options:
            inputs["temperature"] = self.temperature
        if "batches" in scorer.needs:
            inputs["batches"] = self._calibration_data(trainer, pl_module)
        if "input_shape" in scorer.needs:
            images, _ = next(self._calibration_stream(trainer, pl_module))
            inputs["input_shape"] = tuple(images.shape[1:])
        network, current = pl_module.network, pl_module.pruning_mask
        return self.pruner.mask(network, sparsity, current_mask=current, iterations=self.synflow_iterations, **inputs)

    def _calibration_stream(self, trainer: Trainer, pl_module: ImageClassifier) -> Iterator[tuple[Tensor, Tensor]]:
        """Training batches drawn afresh in each epoch's order (identically on every rank)."""
        return self.training_batches(trainer, pl_module, epoch=trainer.current_epoch)

    def _calibration_data(self, trainer: Trainer, pl_module: ImageClassifier) -> list[tuple[Tensor, Tensor]]:
        stream = self._calibration_stream(trainer, pl_module)
        if self.calibration_batches is not None:
            batches = list(islice(stream, self.calibration_batches))
            if len(batches) < self.calibration_batches:
                raise ValueError(
                    f"calibration_batches={self.calibration_batches}, but the training loader has only "
                    f"{len(batches)} batches"
                )
            return batches
        return class_balanced_batches(
            stream, pl_module.num_classes, self.samples_per_class, self.pruner.scorer.calibration_splits
        )


def _calibration_options(
    score: Score, samples_per_class: int | None, calibration_batches: int | None
) -> tuple[int | None, int | None]:
    if "batches" not in score.needs:
        if samples_per_class is not None or calibration_batches is not None:
            raise ValueError(
                f"score {score.name!r} needs no calibration data; samples_per_class and calibration_batches "
                f"apply to the scores that need batches ({', '.join(_scores_that(lambda s: 'batches' in s.needs))})"
            )
        return None, None
    if samples_per_class is not None and calibration_batches is not None:
        raise ValueError("give samples_per_class (class-balanced) or calibration_batches (plain batches), not both")
    if calibration_batches is not None:
        return None, check_int(calibration_batches, "calibration_batches", 1)
    if samples_per_class is None:
        return _DEFAULT_SAMPLES_PER_CLASS, None
    return check_int(samples_per_class, "samples_per_class", 1), None


def _bn_mode_option(score: Score, bn_mode: str | None) -> str | None:
    if "bn_mode" not in score.options:
        if bn_mode is not None:
            raise UserError(
                f"bn_mode applies to the scores with a bn_mode option "
                f"({', '.join(_scores_that(lambda s: 'bn_mode' in s.options))}); score {score.name!r} takes none"
                + (f" (it scores with bn_mode {score.settings['bn_mode']!r})" if "bn_mode" in score.settings else "")
            )
        return None
    if bn_mode is None:
        return score.options["bn_mode"]
    return check_bn_mode(bn_mode)


def _scores_that(condition: Callable[[Score], bool]) -> list[str]:
    """The registered weight scores that meet ``condition``."""
    return [name for name in list_scores("weights") if condition(get_score(name))]
