"""``LotteryTicket``: rewinding, optimizer/LR reset, controls, and resume from the middle of a round."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import LotteryTicket
from lit_prune.module import ImageClassifier
from tests.pruning_helpers import digits, make_module, make_trainer


class _CaptureAfterRewind(L.Callback):
    """Runs after LotteryTicket's hook at the first round boundary and records what it sees."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.weights: dict[str, torch.Tensor] = {}
        self.optimizer_state_sizes: list[int] = []
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
        if trainer.current_epoch == self.epoch:
            self.weights = {k: v.detach().clone() for k, v in pl_module.network.state_dict().items()}
            self.optimizer_state_sizes = [len(opt.state) for opt in trainer.optimizers]
            self.lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]


def _module_with_schedule() -> ImageClassifier:
    return make_module(
        lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )


def test_survivors_rewind_to_initialisation_with_fresh_optimizer_and_lr() -> None:
    L.seed_everything(0)
    module = _module_with_schedule()
    initial = {k: v.detach().clone() for k, v in module.network.state_dict().items()}
    capture = _CaptureAfterRewind(epoch=2)
    ticket = LotteryTicket(epochs_per_round=2, rounds=1, fraction_of_remaining=0.6)
    make_trainer(None, max_epochs=4, callbacks=[ticket, capture]).fit(module, digits())

    mask = module.pruning_mask
    assert mask.sparsity() == pytest.approx(0.6, abs=1e-5)
    for name, tensor in initial.items():
        expected = tensor * mask[name] if name in mask else tensor
        assert torch.equal(capture.weights[name], expected), f"{name} was not rewound to its initial value"
    assert capture.optimizer_state_sizes == [0], "optimizer state survived the rewind"
    assert capture.lrs == [0.05], "the LR schedule did not restart"
    names = [s["name"] for s in module.pruning_stages]
    assert names == ["baseline", "round1/pruned", "round1/trained"]


def test_late_rewinding_to_an_epoch_restores_that_epochs_weights_and_lr() -> None:
    L.seed_everything(0)
    module = _module_with_schedule()
    at_epoch_1 = _CaptureAfterRewind(epoch=1)
    after_rewind = _CaptureAfterRewind(epoch=3)
    ticket = LotteryTicket(epochs_per_round=3, rounds=1, fraction_of_remaining=0.5, rewind_epoch=1)
    make_trainer(None, max_epochs=5, callbacks=[at_epoch_1, ticket, after_rewind]).fit(module, digits())

    mask = module.pruning_mask
    for name, tensor in at_epoch_1.weights.items():
        expected = tensor * mask[name] if name in mask else tensor
        assert torch.equal(after_rewind.weights[name], expected), name
    assert after_rewind.lrs == pytest.approx([0.025]), "LR schedule not advanced to the rewind epoch"


def test_iterative_rounds_reach_target_sparsity_and_masks_shrink() -> None:
    L.seed_everything(0)
    module = make_module()
    ticket = LotteryTicket(epochs_per_round=1, rounds=3, target_sparsity=0.875, exclude=["fc.weight"])
    make_trainer(None, max_epochs=4, callbacks=[ticket]).fit(module, digits())
    pruned = [s for s in module.pruning_stages if s["name"].endswith("/pruned")]
    assert [round(s["sparsity"], 4) for s in pruned] == [0.5, 0.75, 0.875]
    assert "fc.weight" not in module.pruning_mask


@pytest.mark.parametrize("control", ["reinit", "random_prune"])
def test_controls(control: str) -> None:
    L.seed_everything(0)
    reference = make_module()
    ticket = LotteryTicket(epochs_per_round=1, rounds=1, fraction_of_remaining=0.5)
    make_trainer(None, max_epochs=2, callbacks=[ticket]).fit(reference, digits())
    L.seed_everything(0)
    module = make_module()
    initial = {k: v.detach().clone() for k, v in module.network.state_dict().items()}
    capture = _CaptureAfterRewind(epoch=1)
    ticket = LotteryTicket(epochs_per_round=1, rounds=1, fraction_of_remaining=0.5, control=control)
    make_trainer(None, max_epochs=2, callbacks=[ticket, capture]).fit(module, digits())

    if control == "random_prune":
        assert module.pruning_mask.layer_sparsity() == pytest.approx(reference.pruning_mask.layer_sparsity())
        assert not module.pruning_mask.equals(reference.pruning_mask)
        weight = "layer2.0.conv1.weight"
        assert torch.equal(capture.weights[weight], initial[weight] * module.pruning_mask[weight])
    else:
        assert module.pruning_mask.equals(reference.pruning_mask)
        weight = "layer2.0.conv1.weight"
        kept = module.pruning_mask[weight]
        assert not torch.equal(capture.weights[weight][kept], initial[weight][kept]), "reinit kept the initial weights"
        assert (capture.weights[weight][~kept] == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs_per_round": 2, "rounds": 0}, "rounds must be >= 1"),
        ({"epochs_per_round": 2}, "needs rounds"),
        ({"epochs_per_round": 2, "rounds": 2, "rewind_epoch": 2}, "rewind_epoch"),
        ({"epochs_per_round": 2, "target_sparsity": 1.0}, r"\[0, 1\)"),
        ({"epochs_per_round": 2, "rounds": 2, "control": "shuffle"}, "control"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LotteryTicket(**kwargs)


def test_max_epochs_must_match_the_rounds() -> None:
    with pytest.raises(ValueError, match="max_epochs = 6"):
        make_trainer(None, max_epochs=5, callbacks=[LotteryTicket(epochs_per_round=2, rounds=2)]).fit(
            make_module(), digits()
        )


def _ticket() -> LotteryTicket:
    """Rounds start at epochs 3 and 5; round two spans epochs 5 and 6."""
    return LotteryTicket(epochs_per_round=3, rounds=2, fraction_of_remaining=0.5, rewind_epoch=1)


def test_resume_in_the_middle_of_round_two_ends_like_an_uninterrupted_run(
    tmp_path: Path, interrupted_fit: Callable[..., Path]
) -> None:
    L.seed_everything(0)
    uninterrupted = _module_with_schedule()
    make_trainer(tmp_path / "a", max_epochs=7, callbacks=[_ticket()]).fit(uninterrupted, digits())

    L.seed_everything(0)
    first = _module_with_schedule()
    last = interrupted_fit(first, [_ticket()], max_epochs=7, stop_after_epoch=5, datamodule=digits())
    assert first.pruning_mask is not None and first.current_epoch == 6

    L.seed_everything(123)
    resumed = _module_with_schedule()
    make_trainer(tmp_path / "c", max_epochs=7, callbacks=[_ticket()]).fit(resumed, digits(), ckpt_path=last)
    assert resumed.pruning_mask.equals(uninterrupted.pruning_mask)
    for name, tensor in uninterrupted.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[name], tensor, msg=name)
    assert [s["name"] for s in resumed.pruning_stages] == [s["name"] for s in uninterrupted.pruning_stages]
