"""N:M sparsity: ASP's layout, exact N:M masks, capped intermediate steps, the callbacks, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from callbacks import LotteryTicket, MagnitudePruning, SaliencyPruning
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import NMPattern, PruningMask, nm_prune_mask, parse_pattern, prunable_parameters
from lit_prune.pruning.unstructured import UnstructuredPruner
from tests.pruning_helpers import digits, make_module, make_trainer

TWO_FOUR = NMPattern(2, 4)


def _asp_groups(weight: Tensor, m: int) -> Tensor:
    """The groups of NVIDIA ASP's ``create_mask``: linear ``(K, C)`` as is, conv ``(K, C, R, S)``
    permuted to ``(R, S, K, C)``; rows of ``m`` consecutive input channels."""
    if weight.dim() == 4:
        weight = weight.permute(2, 3, 0, 1)
    return weight.reshape(-1, m)


def _sorted_rows(rows: Tensor) -> Tensor:
    return rows[torch.argsort(rows[:, 0], stable=True)]


def test_patterns_parse_and_bad_ones_are_refused() -> None:
    assert parse_pattern("2:4") == TWO_FOUR and parse_pattern(" 1 : 8 ") == NMPattern(1, 8)
    assert parse_pattern(None) is None and str(TWO_FOUR) == "2:4" and TWO_FOUR.sparsity == 0.5
    for bad in ("4:2", "0:4", "2/4", "2:4:8", "4:4"):
        with pytest.raises(UserError, match="N:M"):
            parse_pattern(bad)


@pytest.mark.parametrize("shape", [(6, 8), (4, 8, 3, 3)], ids=["linear", "conv"])
def test_groups_are_asps_consecutive_input_channels_at_each_kernel_position(shape: tuple[int, ...]) -> None:
    weight = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    ours = TWO_FOUR.groups(weight)
    assert torch.equal(_sorted_rows(ours), _sorted_rows(_asp_groups(weight, 4)))
    assert torch.equal(TWO_FOUR.ungroup(ours, weight.shape), weight)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_at_the_patterns_sparsity_the_mask_keeps_the_n_largest_of_every_group(scope: str) -> None:
    torch.manual_seed(0)
    weights = {"fc.weight": torch.randn(6, 8), "conv.weight": torch.randn(4, 8, 3, 3)}
    mask = nm_prune_mask({n: w.abs() for n, w in weights.items()}, 0.5, TWO_FOUR, scope=scope)
    for name, weight in weights.items():
        assert TWO_FOUR.is_exact(mask[name]), name
        top_two = torch.zeros_like(TWO_FOUR.groups(weight), dtype=torch.bool)
        top_two.scatter_(1, TWO_FOUR.groups(weight).abs().topk(2, dim=1).indices, True)
        assert torch.equal(TWO_FOUR.groups(mask[name]), top_two), name


def test_intermediate_steps_never_prune_more_than_m_minus_n_of_a_group_and_end_exact() -> None:
    torch.manual_seed(0)
    scores = {"a.weight": torch.rand(8, 16), "b.weight": torch.rand(4, 16, 3, 3)}
    scores["a.weight"][:, :4] = 0.0  # a whole group of low scores: uncapped selection would empty it
    step = nm_prune_mask(scores, 0.3, TWO_FOUR)
    assert step.num_pruned() == round(0.3 * step.num_total())
    for keep in step.values():
        assert bool((TWO_FOUR.groups(keep).sum(1) >= 2).all())
    final = nm_prune_mask(scores, 0.5, TWO_FOUR, current_mask=step)
    for name, keep in final.items():
        assert TWO_FOUR.is_exact(keep) and not (keep & ~step[name]).any(), name
    with pytest.raises(ValueError, match="at most 0.5"):
        nm_prune_mask(scores, 0.6, TWO_FOUR)
    emptied = PruningMask({name: torch.zeros_like(s, dtype=torch.bool) for name, s in scores.items()})
    with pytest.raises(ValueError, match="already prunes more than 2"):
        nm_prune_mask(scores, 0.5, TWO_FOUR, current_mask=emptied)


def test_layers_that_do_not_fit_are_left_out_unless_named() -> None:
    network = make_module().network
    pruner = UnstructuredPruner(pattern="2:4")
    assert pruner.left_out(network) == {"conv1.weight": "input size 3 is not a multiple of 4"}
    assert set(pruner.parameters(network)) == set(prunable_parameters(network)) - {"conv1.weight"}
    with pytest.raises(UserError, match=r"cannot prune conv1.weight \(input size 3"):
        UnstructuredPruner(pattern="2:4", include=["conv1.weight", "layer1.*"]).parameters(network)
    with pytest.raises(UserError, match="leave out layer_sparsity"):
        UnstructuredPruner(pattern="2:4", layer_sparsity={"fc.weight": 0.5})
    with pytest.raises(UserError, match="must be 0.5"):
        MagnitudePruning(target_sparsity=0.7, pattern="2:4")
    assert LotteryTicket(epochs_per_round=1, rounds=2, pattern="2:4").levels[-1] == pytest.approx(0.5)


def _exactly_two_four(module: ImageClassifier) -> None:
    params = dict(module.network.named_parameters())
    assert set(module.pruning_mask) == set(prunable_parameters(module.network)) - {"conv1.weight"}
    for name, keep in module.pruning_mask.items():
        assert TWO_FOUR.is_exact(keep), f"{name}: the mask is not exactly 2:4"
        assert TWO_FOUR.holds(params[name]), f"{name}: more than 2 non-zero weights in a group of 4"


def _gradual() -> MagnitudePruning:
    """Steps at the starts of epochs 1, 2 and 3 (the cubic schedule is 0 at epoch 0); the last is exactly 2:4."""
    return MagnitudePruning(pattern="2:4", schedule="gradual", start_epoch=0, end_epoch=3)


class _StopAfterEpoch(L.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def test_gradual_two_four_stays_exact_through_training_and_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    L.seed_everything(0)
    uninterrupted = make_module()
    with caplog.at_level(logging.INFO):
        make_trainer(None, max_epochs=4, callbacks=[_gradual()]).fit(uninterrupted, digits())
    assert "pattern 2:4 leaves 1 parameter(s) dense: conv1.weight (input size 3" in caplog.text
    _exactly_two_four(uninterrupted)

    L.seed_everything(0)
    first = make_module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    make_trainer(tmp_path, max_epochs=4, callbacks=[_gradual(), checkpoint, _StopAfterEpoch(1)]).fit(first, digits())
    assert not any(TWO_FOUR.is_exact(keep) for keep in first.pruning_mask.values()), "one of three steps done"

    L.seed_everything(123)
    resumed = make_module()
    make_trainer(tmp_path, max_epochs=4, callbacks=[_gradual()]).fit(
        resumed, digits(), ckpt_path=tmp_path / "last.ckpt"
    )
    _exactly_two_four(resumed)
    assert resumed.pruning_mask.equals(uninterrupted.pruning_mask)
    for name, tensor in uninterrupted.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[name], tensor, msg=name)


def test_saliency_stages_reach_exactly_two_four() -> None:
    L.seed_everything(0)
    module = make_module()
    stages = [
        {"trigger": "epoch", "value": 0, "fraction_of_target": 0.5},
        {"trigger": "epoch", "value": 1, "fraction_of_target": 1.0},
    ]
    callback = SaliencyPruning(score="snip", pattern="2:4", stages=stages, calibration_batches=1)
    make_trainer(None, max_epochs=2, callbacks=[callback]).fit(module, digits())
    _exactly_two_four(module)
    assert callback.target_sparsity == 0.5 and callback.scoring_settings()["pattern"] == "2:4"
