"""``PruningCallback``: the duties every lit-prune callback shares, written once.

A callback of lit-prune decides *when* something happens (an epoch, an accuracy, a round) and
calls :mod:`lit_prune` for *what*. Everything else it needs is here: the check that the module is
an ``ImageClassifier``, the measurement and recording of pruning stages (with the ``fine_tuned``
stage at the end of training), a ``state_key`` and a checkpointed state from declared fields,
decisions made on global rank 0 and broadcast (failures included), logging to every logger, files
written on rank 0 through :func:`lit_prune.atomic_files.atomic_write`, and calibration batches.
``docs/extending.md`` shows how to write a callback on it.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from callbacks.batches import model_batches, required_loader
from callbacks.evaluation import evaluate_on_validation
from lit_prune.atomic_files import atomic_write
from lit_prune.errors import UserError, UserTypeError
from lit_prune.module import ImageClassifier
from lit_prune.renamed_options import refuse_renamed_options
from lit_prune.validation import check_int

__all__ = ["PruningCallback"]

T = TypeVar("T")

_KEY_DIGITS = 6
"""Floats in a state key are rounded to this many decimals, so float noise does not change it."""


class PruningCallback(Callback, ABC):
    """Base of lit-prune's callbacks: module check, stages, state, rank-0 decisions, logging, files.

    A subclass declares three things and implements the hooks that decide when to act:

    - :meth:`describe_method`, the method in words for the run report (``None`` for a callback
      that does not change the model);
    - :attr:`state_key_fields`, the attributes that tell two instances apart in a checkpoint
      (two ``MagnitudePruning`` callbacks with different targets keep separate states);
    - :attr:`state_defaults`, the schedule state it checkpoints (round reached, stage fired),
      attribute name to its value before anything happened. ``__init__`` sets each attribute to
      its default, :meth:`state_dict` saves them, and :meth:`load_state_dict` restores them, a
      key missing from an older checkpoint as its default; :meth:`has_pruned` says, from them,
      whether the callback has changed the model yet.

    Every hook that a subclass overrides carries ``typing_extensions.override``, so a misspelt
    hook name is an error of the type checker instead of a hook that silently never runs.

    Args:
        eval_batches: Validation batches used to measure a stage (the trainer's integer
            ``limit_val_batches``, or all of them, when None).
        **renamed: Options under a name lit-prune no longer uses; each is refused with the
            option that replaced it (:mod:`lit_prune.renamed_options`).

    Raises:
        UserError: If ``eval_batches`` is below 1, or an option is given under its old name.
        TypeError: If an option is unknown.
    """

    state_key_fields: ClassVar[tuple[str, ...]] = ()
    """Attributes whose values make up :attr:`state_key`."""

    state_defaults: ClassVar[Mapping[str, Any]] = {}
    """The checkpointed schedule state: attribute name to its initial value."""

    def __init__(self, eval_batches: int | None = None, **renamed: Any) -> None:
        refuse_renamed_options(type(self).__name__, renamed)
        self.eval_batches = check_int(
            eval_batches, "eval_batches", 1, optional=True, meaning="validation batches per stage; null: all"
        )
        for name, default in self.state_defaults.items():
            setattr(self, name, copy.deepcopy(default))

    @abstractmethod
    def describe_method(self) -> str | None:
        """The method in a few words for the run report, or None for a callback that prunes nothing.

        The report joins the descriptions of a run's callbacks with ``" + "``
        (``"magnitude one-shot global 90%"``).
        """

    def has_pruned(self) -> bool:
        """Whether this callback has changed the model in this run (then ``fine_tuned`` is recorded at the end)."""
        return False

    @property
    @override
    def state_key(self) -> str:
        values = {name: _key_value(getattr(self, name)) for name in self.state_key_fields}
        return self._generate_state_key(**values)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.state_defaults}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, default in self.state_defaults.items():
            setattr(self, name, state_dict[name] if name in state_dict else copy.deepcopy(default))

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.classifier(pl_module)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.has_pruned():
            self.record(trainer, self.classifier(pl_module), "fine_tuned")

    def classifier(self, pl_module: LightningModule) -> ImageClassifier:
        """``pl_module`` as the ``ImageClassifier`` it must be.

        Raises:
            UserTypeError: If it is another kind of module.
        """
        if not isinstance(pl_module, ImageClassifier):
            raise UserTypeError(
                f"{type(self).__name__} works with lit_prune's ImageClassifier (model.network names the network), "
                f"got {type(pl_module).__name__}"
            )
        return pl_module

    def check_epochs_before_end(self, trainer: Trainer, epochs: Iterable[int | None], option: str, reason: str) -> None:
        """Refuses epochs the run never starts: this callback acts at the start of each, so each must be < max_epochs.

        Args:
            trainer: The trainer about to fit (an unbounded ``max_epochs`` accepts every epoch).
            epochs: The epochs the callback would act at (``None`` entries are ignored).
            option: The option the epochs come from, as the user writes it.
            reason: What happens at those epochs and after, for the message.

        Raises:
            UserError: If an epoch is at or after ``trainer.max_epochs``.
        """
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return
        late = sorted({epoch for epoch in epochs if epoch is not None and epoch >= max_epochs})
        if late:
            raise UserError(
                f"{type(self).__name__}: {option} puts epoch{'s' if len(late) > 1 else ''} {late} at or after "
                f"trainer.max_epochs={max_epochs}; {reason}, so each must be < max_epochs"
            )

    def measure_stage(self, trainer: Trainer, pl_module: ImageClassifier) -> dict[str, Any]:
        """What every stage of this callback records: validation loss, top-1 and top-5 now.

        Every rank evaluates the same batches and rank 0's numbers are broadcast
        (:func:`callbacks.evaluation.evaluate_on_validation`). A subclass may add values.
        """
        return evaluate_on_validation(trainer, pl_module, self.eval_batches)

    def record(self, trainer: Trainer, pl_module: ImageClassifier, name: str, **values: Any) -> dict[str, Any]:
        """Measures the model now (:meth:`measure_stage`) and records it as the stage ``name`` of the run.

        Args:
            trainer: The running trainer.
            pl_module: The module; the stage goes into its ``pruning_stages``.
            name: The stage, e.g. ``baseline``, ``round2/pruned``, ``fine_tuned``.
            **values: Further entries of the stage (targets, what was done).

        Returns:
            The recorded stage, with this callback's :meth:`describe_method` as its ``method`` (so a
            report of the checkpoint names the method even when the evaluating run has no callback).
        """
        method = self.describe_method()
        described = {} if method is None else {"method": method}
        return pl_module.record_stage(name, **{**self.measure_stage(trainer, pl_module), **described, **values})

    def decide_on_rank_zero(self, trainer: Trainer, decide: Callable[[], T], *, every_rank: bool = False) -> T:
        """Runs ``decide`` on global rank 0 and gives its result to every rank.

        A failure is broadcast as well: rank 0 raises its own error and every other rank a
        ``RuntimeError`` that names it, so no rank waits forever for a broadcast that never
        comes. Without ``every_rank``, ``decide`` runs on rank 0 only and must not call a
        collective.

        Args:
            trainer: The running trainer.
            decide: Computes the decision (a mask, the units to keep, a measurement).
            every_rank: Run ``decide`` on every rank (for a computation that may call a
                collective, such as a forward pass through synchronised batch norm) and use
                rank 0's result; a rank whose own run failed raises its error.

        Returns:
            Rank 0's result, on every rank.
        """
        result: T | None = None
        failure: Exception | None = None
        if every_rank or trainer.is_global_zero:
            try:
                result = decide()
            except Exception as error:  # noqa: BLE001 - every rank must learn of it, or the others would hang
                failure = error
        described = None if failure is None else f"{type(failure).__name__}: {failure}"
        payload = trainer.strategy.broadcast({"result": result, "failure": described}, src=0)
        if failure is not None:
            raise failure
        if payload["failure"] is not None:
            raise RuntimeError(f"{type(self).__name__} failed on global rank 0: {payload['failure']}")
        return payload["result"]

    def log_metrics(self, trainer: Trainer, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Logs ``metrics`` to every logger of the trainer and makes them visible in ``trainer.callback_metrics``.

        Loggers write on global rank 0 only; call this on every rank with the same values.

        Args:
            trainer: The running trainer.
            metrics: Name (``prune/sparsity``) to value.
            step: The x-axis value; the trainer's ``global_step`` when None.
        """
        values = {name: float(value) for name, value in metrics.items()}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step if step is None else step)
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in values.items()})

    def write_file(self, trainer: Trainer, path: str | Path, write: Callable[[Path], Any]) -> Path | None:
        """Writes a file of the run on global rank 0, atomically (:func:`lit_prune.atomic_files.atomic_write`).

        Args:
            trainer: The running trainer.
            path: The file; its folder is created if missing.
            write: Called with a temporary path on rank 0; writes the content there. It must not
                call a collective.

        Returns:
            ``path`` on rank 0, None on the other ranks.
        """
        if not trainer.is_global_zero:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, write)

    def training_batches(
        self, trainer: Trainer, pl_module: ImageClassifier, limit: int | None = None, epoch: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Calibration batches: training batches as the model sees them at evaluation, on its device.

        They come from a fresh training loader of the data module (else the trainer's), through
        ``transform_batch(train=False)`` (:func:`callbacks.batches.model_batches`), so scores do not
        depend on augmentation draws.

        Args:
            trainer: The running trainer.
            pl_module: The module whose device the batches go to.
            limit: At most this many batches; all when None.
            epoch: Draw in the order of this epoch (the sampler's ``set_epoch``); None keeps the
                loader's first-epoch order.

        Raises:
            RuntimeError: If the run has no training data.
        """
        loader = required_loader(trainer, "train", type(self).__name__)
        return model_batches(trainer, loader, pl_module.device, limit=limit, epoch=epoch)


def _key_value(value: Any) -> Any:
    """A field's value as it enters a state key: hashable, and floats rounded."""
    if isinstance(value, float):
        return round(value, _KEY_DIGITS)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return tuple(_key_value(item) for item in dataclasses.astuple(value))
    if isinstance(value, Mapping):
        return tuple((key, _key_value(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_key_value(item) for item in value)
    return value
