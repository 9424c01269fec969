"""``RobustnessEvaluation``: clean and adversarial top-1 of the final model, and robust convergence per round."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from callbacks.base import PruningCallback
from callbacks.batches import model_batches, required_loader
from callbacks.profiling import _run_dir
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.robustness import (
    AdversarialTraining,
    AttackSettings,
    RobustCounts,
    check_attack_names,
    format_pixels,
    normalization_of,
    robust_accuracy,
    robustness_section,
)
from lit_prune.validation import check_bool, check_fraction, check_int

__all__ = ["ROBUSTNESS_JSON", "RobustnessEvaluation"]

ROBUSTNESS_JSON = "robustness.json"
"""The file this callback writes into the run directory (the same section as ``report.json``'s)."""


class RobustnessEvaluation(PruningCallback):
    """Measures clean top-1 and top-1 under FGSM and PGD (L∞, pixel space) after ``fit`` and on ``test``.

    The attacks come from ``torchattacks`` (:mod:`lit_prune.robustness`): FGSM (Goodfellow et al.
    2015) and PGD from a random start (Madry et al. 2018), with ``epsilon`` and ``step_size`` in
    pixel units of the ``[0, 1]`` range (``8/255`` may be written as such). The test images are
    un-normalised with the data module's ``mean`` and ``std``, attacked and clipped to ``[0, 1]``,
    and normalised again for the network. An example is robust only if it is classified correctly
    clean and after every attack (all ``restarts`` of PGD), so robust accuracy never exceeds clean
    accuracy (AutoAttack's convention).

    It runs at the end of training (``on_train_end``, unless ``after_fit: false``) and at the end of
    the test loop (``lit-prune test --ckpt_path RUN/checkpoints/last.ckpt`` evaluates a finished run).
    Under DDP each rank attacks its share of the test batches (batch ``i`` on rank ``i mod world
    size``) and the counts are summed over ranks. The results go to TensorBoard
    (``robustness/clean_top1``, ``robustness/fgsm_top1``, ``robustness/pgd_top1``), to
    ``robustness.json`` in the run directory, and to the ``robustness`` section of ``report.json``
    and ``report.md`` through :meth:`report_sections` when the run has a ``ProfilingCallback``,
    whatever the order of the callbacks (the evaluation happens before the report is written).

    With ``target_accuracy`` it also follows ``monitor`` (``val/pgd_top1``, which an
    ``ImageClassifier`` with ``adversarial_training`` logs every epoch) through the rounds of the
    run: a round starts whenever the model's mask or shape changes (``LotteryTicket``'s rounds),
    and for each one the report gives the epoch of the round at which ``monitor`` first reached the
    target, and its final and best value. That is the measure of Li et al. 2020 ("Towards Practical
    Lottery Ticket Hypothesis for Adversarial Training"), whose boosting tickets reach a robust
    accuracy in fewer epochs.

    Args:
        attacks: Attacks to run, from ``fgsm``, ``pgd`` and ``fgsm_rs``.
        epsilon: Largest change of a pixel, in [0, 1] (pixel units; ``8/255`` allowed).
        step_size: PGD step, in (0, 1] (pixel units).
        steps: PGD steps, >= 1.
        restarts: PGD runs from independent random starts, >= 1.
        random_start: Start PGD at a uniform draw in the ε-ball.
        max_batches: Test batches evaluated; the trainer's integer ``limit_test_batches``, or all, when None.
        seed: Seed of the random starts (the evaluation does not use or change the global random state).
        after_fit: Also evaluate at the end of ``fit`` (not only on ``test``).
        target_accuracy: Robust validation accuracy whose first epoch is recorded per round, in (0, 1];
            None records no rounds.
        monitor: The logged validation metric the rounds follow.
        **kwargs: Options of ``PruningCallback`` (``eval_batches``).

    Raises:
        UserError: If an option is out of range or an attack unknown.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ("attacks", "settings", "target_accuracy", "monitor")
    state_defaults: ClassVar[Mapping[str, Any]] = {"rounds": []}

    def __init__(
        self,
        attacks: list[str] | None = None,
        epsilon: float | str = "8/255",
        step_size: float | str = "2/255",
        steps: int = 10,
        restarts: int = 1,
        random_start: bool = True,
        max_batches: int | None = None,
        seed: int = 0,
        after_fit: bool = True,
        target_accuracy: float | None = None,
        monitor: str = "val/pgd_top1",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.attacks = check_attack_names(["fgsm", "pgd"] if attacks is None else attacks)
        self.settings = AttackSettings.checked(epsilon, step_size, steps, restarts, random_start)
        self.max_batches = check_int(max_batches, "max_batches", 1, optional=True, meaning="test batches; null: all")
        self.seed = check_int(seed, "seed", None)
        self.after_fit = check_bool(after_fit, "after_fit")
        self.target_accuracy = (
            None
            if target_accuracy is None
            else check_fraction(target_accuracy, "target_accuracy", zero=False, one=True)
        )
        if not isinstance(monitor, str) or not monitor:
            raise UserError(
                f"monitor must be the name of a logged validation metric such as val/pgd_top1, got {monitor!r}"
            )
        self.monitor = monitor
        self.results: dict[str, Any] | None = None

    @override
    def describe_method(self) -> None:
        return None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        module = self.classifier(pl_module)
        if stage in ("fit", "test"):
            normalization_of(trainer.datamodule, type(self).__name__)
        if (
            stage == "fit"
            and self.target_accuracy is not None
            and self.monitor == "val/pgd_top1"
            and module.adversarial_training is None
        ):
            raise UserError(
                "RobustnessEvaluation target_accuracy follows val/pgd_top1, which the model logs only with "
                "adversarial_training (model.adversarial_training: {method: pgd}); set it, or monitor another metric"
            )

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.target_accuracy is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        module = self.classifier(pl_module)
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise UserError(
                f"RobustnessEvaluation monitors {self.monitor!r}, which was not logged; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        self._follow(module, trainer.current_epoch, float(value), trainer.callback_metrics.get("val/top1"))

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.after_fit:
            self.evaluate(trainer, self.classifier(pl_module), "fit")

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.evaluate(trainer, self.classifier(pl_module), "test")

    def report_sections(self) -> dict[str, Any]:
        """The sections this callback adds to ``report.json``: ``robustness``, once it has measured."""
        return {} if self.results is None else {"robustness": self.results}

    def evaluate(self, trainer: Trainer, pl_module: ImageClassifier, trigger: str) -> dict[str, Any]:
        """Attacks this rank's share of the test batches, sums the counts over ranks, logs and writes them.

        Call on every rank.

        Returns:
            The ``robustness`` section.
        """
        mean, std = (
            torch.tensor(values, device=pl_module.device).view(1, -1, 1, 1)
            for values in normalization_of(trainer.datamodule, type(self).__name__)
        )
        loader = required_loader(trainer, "test", type(self).__name__)
        limit = self.max_batches or (
            trainer.limit_test_batches if isinstance(trainer.limit_test_batches, int) else None
        )
        indices = itertools.count(trainer.global_rank, trainer.world_size)
        shard = _shard(itertools.islice(loader, limit), trainer.global_rank, trainer.world_size)
        batches = model_batches(trainer, shard, pl_module.device)
        counts = robust_accuracy(
            pl_module.network, batches, mean, std, self.attacks, self.settings, seed=self.seed, indices=indices
        )
        total = trainer.strategy.reduce(counts.as_tensor(self.attacks).to(pl_module.device), reduce_op="sum")
        counts = RobustCounts.from_tensor(total.cpu(), self.attacks)
        section = robustness_section(counts, self.settings, self.attacks)
        section.update(trigger=trigger, training=_training(pl_module, trigger))
        if self.target_accuracy is not None:
            section.update(target_accuracy=self.target_accuracy, monitor=self.monitor, rounds=list(self.rounds))
        self.results = section
        accuracies = {f"robustness/{key}": value for key, value in section.items() if key.endswith("_top1")}
        self.log_metrics(trainer, {key: value for key, value in accuracies.items() if value is not None})
        written = self.write_file(trainer, Path(_run_dir(trainer)) / ROBUSTNESS_JSON, lambda path: _dump(section, path))
        if written is not None:
            rank_zero_info(f"RobustnessEvaluation: {_summary(section)}; wrote {written}")
        return section

    def _follow(self, pl_module: ImageClassifier, epoch: int, value: float, clean: Tensor | None) -> None:
        """Adds this epoch's ``monitor`` value to the current round, starting a new round when the model changed."""
        sparsity = 0.0 if pl_module.pruning_mask is None else pl_module.pruning_mask.sparsity()
        shape = [round(sparsity, 6), len(pl_module.surgery_history)]
        if not self.rounds or self.rounds[-1]["state"] != shape:
            self.rounds.append(
                {
                    "round": len(self.rounds),
                    "state": shape,
                    "sparsity": sparsity,
                    "start_epoch": epoch,
                    "epochs": 0,
                    "epochs_to_target": None,
                    "epoch_reached": None,
                    "final": None,
                    "best": None,
                    "final_val_top1": None,
                }
            )
        current = self.rounds[-1]
        current["epochs"] = epoch - current["start_epoch"] + 1
        if current["epochs_to_target"] is None and value >= self.target_accuracy:
            current["epochs_to_target"], current["epoch_reached"] = current["epochs"], epoch
        current["final"] = value
        current["best"] = value if current["best"] is None else max(current["best"], value)
        current["final_val_top1"] = None if clean is None else float(clean)


def _training(pl_module: ImageClassifier, trigger: str) -> str:
    """How the evaluated weights were trained: the tested checkpoint's ``adversarial_training``, else the module's."""
    loaded = pl_module.loaded_checkpoint
    if trigger == "test" and loaded is not None:
        try:
            adversary = AdversarialTraining.from_options(loaded.get("adversarial_training"))
        except UserError:
            return "unknown (the checkpoint's adversarial_training options are not understood)"
    else:
        adversary = pl_module.adversarial_training
    return "natural" if adversary is None else adversary.describe()


def _shard(batches: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    """Every ``world_size``-th batch, starting at ``rank``: this rank's share."""
    for index, batch in enumerate(batches):
        if index % world_size == rank:
            yield batch


def _dump(section: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(section, indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _summary(section: Mapping[str, Any]) -> str:
    parts = [
        f"{key.removesuffix('_top1')} {value:.2%}"
        for key, value in section.items()
        if key.endswith("_top1") and value is not None
    ]
    return f"top-1 {', '.join(parts)} at ε {format_pixels(section['epsilon'])} on {section['samples']} test images"
