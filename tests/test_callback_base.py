"""The shared duties of ``PruningCallback``: module check, state from declared fields, rank-0 decisions, files."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import torch
from lightning.pytorch import LightningModule

from callbacks import LotteryTicket, MagnitudePruning
from callbacks.base import PruningCallback
from lit_prune.errors import UserError, UserTypeError


class _Counting(PruningCallback):
    """A callback with a declared key and state, as a subclass writes them."""

    state_key_fields: ClassVar[tuple[str, ...]] = ("target", "stages")
    state_defaults: ClassVar[dict[str, Any]] = {"steps_done": 0, "history": []}

    def __init__(self, target: float = 0.5, stages: tuple[float, ...] = (0.25, 0.5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.stages = list(stages)

    def describe_method(self) -> str:
        return "counting"


def _trainer(rank: int, delivered: dict[str, Any] | None = None) -> SimpleNamespace:
    """A trainer on one rank of two; ``broadcast`` hands out ``delivered`` (rank 0's payload) when given."""
    sent: list[Any] = []

    def broadcast(obj: Any, src: int = 0) -> Any:
        sent.append(obj)
        return obj if delivered is None else delivered

    return SimpleNamespace(is_global_zero=rank == 0, strategy=SimpleNamespace(broadcast=broadcast), sent=sent)


def test_state_key_comes_from_the_declared_fields() -> None:
    assert _Counting(0.5).state_key == _Counting(0.5).state_key
    assert _Counting(0.5).state_key != _Counting(0.7).state_key
    assert _Counting(0.5, stages=(0.1 + 0.2,)).state_key == _Counting(0.5, stages=(0.3,)).state_key
    assert MagnitudePruning(target_sparsity=0.5).state_key == (
        "MagnitudePruning{'target_sparsity': 0.5, 'schedule': 'one_shot', 'start_epoch': 0}"
    )
    assert LotteryTicket(epochs_per_round=2, rounds=2, fraction_of_remaining=0.2).state_key == (
        "LotteryTicket{'epochs_per_round': 2, 'levels': (0.2, 0.36), 'control': 'none'}"
    )


def test_state_round_trips_and_keys_added_later_take_their_defaults() -> None:
    callback = _Counting()
    assert (callback.steps_done, callback.history) == (0, [])
    callback.steps_done, callback.history = 2, [1, 2]
    restored = _Counting()
    restored.load_state_dict(callback.state_dict())
    assert (restored.steps_done, restored.history) == (2, [1, 2])
    older = _Counting()
    older.load_state_dict({"steps_done": 3})
    assert (older.steps_done, older.history) == (3, [])
    assert _Counting().history is not _Counting().history, "each instance gets its own copy of a default"


def test_the_module_check_names_the_callback_and_the_module() -> None:
    with pytest.raises(UserTypeError, match="_Counting works with lit_prune's ImageClassifier.*got LightningModule"):
        _Counting().setup(SimpleNamespace(), LightningModule(), "fit")


def test_describe_method_is_declared() -> None:
    class Undescribed(PruningCallback):
        pass

    with pytest.raises(TypeError, match="describe_method"):
        Undescribed()


def test_options_are_checked_and_old_names_refused() -> None:
    with pytest.raises(UserError, match="eval_batches must be an integer >= 1"):
        _Counting(eval_batches=0)
    with pytest.raises(UserError, match="_Counting: prune_fraction was renamed fraction_of_remaining"):
        _Counting(prune_fraction=0.2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tagret'"):
        _Counting(tagret=0.2)


def test_a_decision_is_made_on_rank_zero_and_broadcast() -> None:
    calls: list[int] = []
    rank0 = _trainer(0)
    assert _Counting().decide_on_rank_zero(rank0, lambda: calls.append(0) or 7) == 7
    rank1 = _trainer(1, delivered={"result": 7, "failure": None})
    assert _Counting().decide_on_rank_zero(rank1, lambda: calls.append(1) or 8) == 7
    assert calls == [0], "the other ranks do not run the decision"
    everywhere = _trainer(1, delivered={"result": 7, "failure": None})
    assert _Counting().decide_on_rank_zero(everywhere, lambda: calls.append(1) or 8, every_rank=True) == 7
    assert calls == [0, 1]


def test_a_failure_on_rank_zero_reaches_every_rank() -> None:
    def fail() -> None:
        raise ValueError("no units left to prune")

    rank0 = _trainer(0)
    with pytest.raises(ValueError, match="no units left"):
        _Counting().decide_on_rank_zero(rank0, fail)
    assert rank0.sent == [{"result": None, "failure": "ValueError: no units left to prune"}], "broadcast first"
    rank1 = _trainer(1, delivered=rank0.sent[0])
    with pytest.raises(RuntimeError, match="_Counting failed on global rank 0: ValueError: no units left"):
        _Counting().decide_on_rank_zero(rank1, fail)


def test_files_are_written_on_rank_zero_only_and_atomically(tmp_path: Path) -> None:
    target = tmp_path / "run" / "out.json"
    assert _Counting().write_file(_trainer(1), target, lambda path: path.write_text("x")) is None
    assert not target.exists()
    assert _Counting().write_file(_trainer(0), target, lambda path: path.write_text("{}")) == target
    assert target.read_text() == "{}" and [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_metrics_go_to_every_logger_and_to_callback_metrics() -> None:
    logged: list[tuple[str, dict[str, float], int]] = []
    loggers = [
        SimpleNamespace(log_metrics=lambda metrics, step, name=name: logged.append((name, metrics, step)))
        for name in ("tensorboard", "csv")
    ]
    trainer = SimpleNamespace(loggers=loggers, global_step=12, callback_metrics={})
    _Counting().log_metrics(trainer, {"prune/sparsity": 0.5})
    _Counting().log_metrics(trainer, {"lth/round_1/val_top1": 0.9}, step=3)
    assert logged == [
        ("tensorboard", {"prune/sparsity": 0.5}, 12),
        ("csv", {"prune/sparsity": 0.5}, 12),
        ("tensorboard", {"lth/round_1/val_top1": 0.9}, 3),
        ("csv", {"lth/round_1/val_top1": 0.9}, 3),
    ]
    assert float(trainer.callback_metrics["prune/sparsity"]) == 0.5
    assert isinstance(trainer.callback_metrics["prune/sparsity"], torch.Tensor)
