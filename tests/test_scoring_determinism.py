"""Data-dependent scores are deterministic: dropout and drop-path are off while scoring (issue 16)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.models import create_model
from lit_prune.pruning import prunable_groups, prunable_parameters
from lit_prune.pruning.group_scores import taylor_from_gradients, taylor_importance
from lit_prune.pruning.saliency import class_balanced_batches, grasp_scores, snip_scores
from lit_prune.pruning.scoring_mode import scoring_mode

Batches = list[tuple[Tensor, Tensor]]


def _snip(model: nn.Module, batches: Batches) -> dict[str, Tensor]:
    return snip_scores(model, prunable_parameters(model), batches)


def _grasp(model: nn.Module, batches: Batches) -> dict[str, Tensor]:
    return grasp_scores(model, prunable_parameters(model), batches)


def _taylor(model: nn.Module, batches: Batches) -> dict[str, Tensor]:
    return taylor_importance(model, prunable_groups(model, kinds=["channels"]), batches)


DATA_SCORES: dict[str, Callable[[nn.Module, Batches], dict[str, Tensor]]] = {
    "snip": _snip,
    "grasp": _grasp,
    "taylor": _taylor,
}
"""Every score that takes calibration data, with its default settings."""


def _calibration(samples_per_class: int = 1) -> Batches:
    generator = torch.Generator().manual_seed(5)
    stream = [(torch.randn(40, 3, 32, 32, generator=generator), torch.arange(40) % 10)]
    return class_balanced_batches(stream, num_classes=10, samples_per_class=samples_per_class)


@pytest.mark.parametrize("score", sorted(DATA_SCORES))
def test_vgg16_bn_scores_do_not_depend_on_the_global_random_state(score: str) -> None:
    torch.manual_seed(0)
    model = create_model("vgg16_bn", num_classes=10)  # in training mode, with two dropout layers
    assert any(isinstance(m, nn.Dropout) for m in model.modules()) and model.training
    batches = _calibration()
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        runs.append(DATA_SCORES[score](model, batches))
    assert runs[0].keys() == runs[1].keys()
    for name, values in runs[0].items():
        assert torch.equal(values, runs[1][name]), f"{score}: {name} changed with the global seed"
    assert any(bool(values.ne(0).any()) for values in runs[0].values())
    assert model.training and all(m.training for m in model.modules()), "modes are restored"


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_scoring_mode_switches_off_dropout_and_drop_path_and_sets_batch_norm(bn_mode: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout2d(0.3), DropPath(0.2), nn.Dropout(0.5))
    model.train()
    model[4].eval()  # a mixed state that must come back as it was
    flags = [m.training for m in model.modules()]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with scoring_mode(model, bn_mode):
        assert model[1].training == (bn_mode == "train")
        assert not any(m.training for i, m in enumerate(model) if i != 1)
        assert not model.training
        model(torch.randn(2, 3, 5, 5))  # batch norm in training mode updates its running statistics
    assert [m.training for m in model.modules()] == flags
    for name, value in model.named_buffers():
        assert torch.equal(value, buffers[name]), name
    with pytest.raises(UserError, match=r"bn_mode must be one of \['eval', 'train'\]"):
        with scoring_mode(model, "inference"):
            pass


def _taylor_by_hand(model: nn.Module, batches: Batches, bn_mode: str) -> dict[str, Tensor]:
    """The criterion from ``.grad`` written by plain backward passes in the stated modes."""
    reference = copy.deepcopy(model).eval()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.train(bn_mode == "train")
    for inputs, targets in batches:
        F.cross_entropy(reference(inputs), targets).backward()
    return taylor_from_gradients(reference, prunable_groups(reference, kinds=["channels"]))


def test_taylor_importance_is_the_accumulated_gradient_criterion_with_dropout_off() -> None:
    torch.manual_seed(0)
    model = create_model("vgg16_bn", num_classes=10)
    groups = prunable_groups(model, kinds=["channels"])
    batches = _calibration()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for bn_mode in ("train", "eval"):
        expected = _taylor_by_hand(model, batches, bn_mode)
        got = taylor_importance(model, groups, batches, bn_mode=bn_mode)
        for name, values in expected.items():
            torch.testing.assert_close(got[name], values, rtol=1e-4, atol=1e-9)
    default = taylor_importance(model, groups, batches)["features.0"]
    in_train = taylor_importance(model, groups, batches, bn_mode="train")["features.0"]
    assert torch.equal(default, in_train), "Molchanov et al.'s code scores in training mode (batch statistics)"
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in before.items())
    with pytest.raises(UserError, match="batches is empty"):
        taylor_importance(model, groups, [])
