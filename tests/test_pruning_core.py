"""Tests of the pure-PyTorch pruning core: masks, selection, schedules and enforcement."""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import nullcontext

import pytest
import torch
from torch import Tensor, nn

from lit_prune.pruning import (
    MaskEnforcer,
    PruningMask,
    clear_pruned_optimizer_state_,
    cubic_sparsity,
    fixed_steps,
    geometric,
    global_prune_mask,
    layerwise_prune_mask,
    linear_steps,
    magnitude_scores,
    one_shot,
    prunable_parameters,
    random_scores,
    sparsity_after_step,
    zero_pruned_gradients_,
    zero_pruned_weights_,
)
from lit_prune.validation import check_sparsity


class _SmallConvNet(nn.Module):
    """A ResNet-like stem, one more convolution and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


class _TokenNet(nn.Module):
    """Holds every parameter kind a selection rule must tell apart."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 6))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, 6))
        self.norm = nn.LayerNorm(6)
        self.qkv = nn.Linear(6, 18)
        self.conv1d = nn.Conv1d(6, 6, 1)
        self.conv3d = nn.Conv3d(2, 2, 1, bias=False)
        self.group_norm = nn.GroupNorm(2, 6)
        self.head = nn.Linear(6, 3)


def _net(seed: int = 0) -> _SmallConvNet:
    torch.manual_seed(seed)
    return _SmallConvNet()


def _keep_is_subset(new: PruningMask, old: PruningMask) -> bool:
    return all(not bool((new[name] & ~old[name]).any()) for name in old)


# ----------------------------------------------------------------------------- parameter selection


def test_default_selection_is_conv_and_linear_weights_only() -> None:
    assert list(prunable_parameters(_net())) == ["conv1.weight", "conv2.weight", "fc.weight"]
    expected = ["qkv.weight", "conv1d.weight", "conv3d.weight", "head.weight"]
    assert list(prunable_parameters(_TokenNet())) == expected


def test_bias_and_norm_flags_add_those_parameters() -> None:
    model = _TokenNet()
    assert list(prunable_parameters(model, include_bias=True)) == [
        "qkv.weight",
        "qkv.bias",
        "conv1d.weight",
        "conv1d.bias",
        "conv3d.weight",
        "head.weight",
        "head.bias",
    ]
    assert list(prunable_parameters(model, include_norm=True)) == [
        "norm.weight",
        "qkv.weight",
        "conv1d.weight",
        "conv3d.weight",
        "group_norm.weight",
        "head.weight",
    ]
    with_all = prunable_parameters(_net(), include_bias=True, include_norm=True)
    assert list(with_all) == [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "conv2.weight",
        "conv2.bias",
        "fc.weight",
        "fc.bias",
    ]
    everything = prunable_parameters(model, include_bias=True, include_norm=True)
    assert not any("embed" in name or "token" in name for name in everything)


def test_include_and_exclude_patterns() -> None:
    model = _net()
    assert list(prunable_parameters(model, exclude=["conv1.weight", "fc.weight"])) == ["conv2.weight"]
    assert list(prunable_parameters(model, include=["conv*"])) == ["conv1.weight", "conv2.weight"]
    assert list(prunable_parameters(model, include=["conv*"], exclude=["*2.*"])) == ["conv1.weight"]
    selected = prunable_parameters(model)
    assert selected["fc.weight"] is model.fc.weight


def test_unmatched_pattern_lists_candidates() -> None:
    model = _net()
    listed = r"'layer9\.\*' matches no prunable parameter.*conv1\.weight, conv2\.weight, fc\.weight"
    with pytest.raises(ValueError, match=listed):
        prunable_parameters(model, include=["layer9.*"])
    with pytest.raises(ValueError, match=r"bn1\.weight.*include_norm=True"):
        prunable_parameters(model, exclude=["bn1.weight"])


def test_empty_selection_and_bad_pattern_types_raise() -> None:
    with pytest.raises(ValueError, match="leave no parameter to prune"):
        prunable_parameters(_net(), exclude=["*"])
    with pytest.raises(ValueError, match="no prunable parameters"):
        prunable_parameters(nn.Sequential(nn.BatchNorm1d(3)))
    with pytest.raises(TypeError, match="list of name patterns"):
        prunable_parameters(_net(), include="conv1.weight")
    with pytest.raises(TypeError, match="torch.nn.Module"):
        prunable_parameters({"w": torch.zeros(2)})


# ----------------------------------------------------------------------------- mask


def test_mask_counts_and_layer_sparsity() -> None:
    mask = PruningMask({"a": torch.tensor([True, False, False, True]), "b": torch.tensor([[False, True]])})
    assert (mask.num_total(), mask.num_pruned(), mask.num_kept()) == (6, 3, 3)
    assert mask.sparsity() == pytest.approx(0.5)
    assert mask.layer_sparsity() == {"a": 0.5, "b": 0.5}
    assert PruningMask.ones_like({"w": torch.zeros(3, 2)}).sparsity() == 0.0


def test_mask_rejects_bad_entries() -> None:
    with pytest.raises(TypeError, match="torch.bool"):
        PruningMask({"w": torch.ones(3)})
    with pytest.raises(ValueError, match="at least one parameter"):
        PruningMask({})
    with pytest.raises(TypeError, match="torch.bool"):
        PruningMask.from_state_dict({"w": torch.ones(3, dtype=torch.int64)})


def test_validate_names_parameter_and_both_shapes() -> None:
    model = _net()
    PruningMask.ones_like(prunable_parameters(model)).validate(model)
    wrong = PruningMask({"conv1.weight": torch.ones(8, 3, 5, 5, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"'conv1\.weight' has shape \(8, 3, 5, 5\).*\(8, 3, 3, 3\)"):
        wrong.validate(model)
    with pytest.raises(ValueError, match="'nope.weight'.*conv1.weight"):
        PruningMask({"nope.weight": torch.ones(2, dtype=torch.bool)}).validate(model)
    with pytest.raises(ValueError, match="has shape"):
        wrong.apply_(model)


def test_apply_zeroes_exactly_the_pruned_weights() -> None:
    model = _net()
    before = model.conv2.weight.detach().clone()
    mask = global_prune_mask(magnitude_scores(prunable_parameters(model)), 0.6)
    assert mask.apply_(model) is model
    keep = mask["conv2.weight"]
    assert torch.equal(model.conv2.weight[keep], before[keep])
    assert bool((model.conv2.weight[~keep] == 0).all())
    total_zero = sum(int((p == 0).sum()) for p in prunable_parameters(model).values())
    assert total_zero == mask.num_pruned()


def test_state_dict_round_trip() -> None:
    mask = global_prune_mask(random_scores(prunable_parameters(_net()), seed=3), 0.4)
    state = mask.state_dict()
    assert all(t.dtype == torch.bool and t.device.type == "cpu" for t in state.values())
    restored = PruningMask.from_state_dict(state)
    assert restored == mask and restored.equals(mask)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert PruningMask.from_state_dict(torch.load(buffer)) == mask
    assert mask.to("cpu") == mask
    other = global_prune_mask(random_scores(prunable_parameters(_net()), seed=4), 0.4)
    assert mask != other


def test_intersect_only_shrinks() -> None:
    a = PruningMask({"x": torch.tensor([True, True, False]), "y": torch.tensor([True, False])})
    b = PruningMask({"x": torch.tensor([True, False, True]), "z": torch.tensor([False])})
    both = a.intersect(b)
    assert torch.equal(both["x"], torch.tensor([True, False, False]))
    assert torch.equal(both["y"], a["y"]) and torch.equal(both["z"], b["z"])
    with pytest.raises(ValueError, match="shapes"):
        a.intersect(PruningMask({"x": torch.ones(4, dtype=torch.bool)}))


# ----------------------------------------------------------------------------- scores


def test_magnitude_and_random_scores() -> None:
    params = prunable_parameters(_net())
    magnitude = magnitude_scores(params)
    assert all(torch.equal(magnitude[n], params[n].detach().abs()) for n in params)
    assert not magnitude["fc.weight"].requires_grad

    torch.manual_seed(1)
    rng_state = torch.get_rng_state()
    first = random_scores(params, seed=7)
    torch.manual_seed(2)
    second = random_scores(params, seed=7)
    assert all(torch.equal(first[n], second[n]) for n in params)
    assert not torch.equal(random_scores(params, seed=8)["fc.weight"], first["fc.weight"])
    torch.manual_seed(1)
    random_scores(params, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_state), "random_scores must not advance the global RNG"
    with pytest.raises(TypeError, match="seed must be an int"):
        random_scores(params, seed=1.5)


# ----------------------------------------------------------------------------- selection


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.7, 0.9, 0.99])
def test_global_sparsity_is_exact(sparsity: float) -> None:
    params = prunable_parameters(_net())
    scores = {n: (s * 10).round() / 10 for n, s in magnitude_scores(params).items()}  # many ties
    mask = global_prune_mask(scores, sparsity)
    assert mask.num_pruned() == round(sparsity * mask.num_total())
    assert list(mask) == list(params)
    kept_min = min(float(scores[n][mask[n]].min()) for n in mask if mask[n].any())
    pruned = [scores[n][~mask[n]] for n in mask if (~mask[n]).any()]
    if pruned:
        assert max(float(p.max()) for p in pruned) <= kept_min


def test_global_ties_broken_by_seeded_keys_not_by_position() -> None:
    scores = {"a": torch.ones(2, 5), "b": torch.ones(7)}
    mask = global_prune_mask(scores, 0.7)
    assert mask.num_pruned() == round(0.7 * 17) == 12
    assert global_prune_mask(scores, 0.7) == mask
    assert global_prune_mask({"b": scores["b"], "a": scores["a"]}, 0.7) == mask, "independent of parameter order"
    assert bool(mask["a"].any()), "the first parameter does not lose every tie (position order would)"
    half = global_prune_mask(scores, 0.5)
    assert half.num_pruned() == round(0.5 * 17)
    assert all(bool((half[n] | ~mask[n]).all()) for n in scores), "the same keys order the ties at every sparsity"


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_layerwise_sparsity_is_exact_per_layer(sparsity: float) -> None:
    scores = {"a": torch.ones(3, 3, 3), "b": torch.randn(10, 7), "c": torch.arange(13.0)}
    mask = layerwise_prune_mask(scores, sparsity)
    for name, score in scores.items():
        assert int((~mask[name]).sum()) == round(sparsity * score.numel())
    assert torch.equal(mask["c"], torch.arange(13) >= round(sparsity * 13))


def test_layerwise_patterns_first_match_wins_and_unmatched_keep_current() -> None:
    scores = {name: torch.randn(40) for name in ("layer1.conv.weight", "layer2.conv.weight", "fc.weight")}
    current = PruningMask({"fc.weight": torch.arange(40) % 4 != 0})
    mask = layerwise_prune_mask(scores, {"layer1.*": 0.25, "layer*": 0.5}, current_mask=current)
    assert mask.layer_sparsity() == {"layer1.conv.weight": 0.25, "layer2.conv.weight": 0.5, "fc.weight": 0.25}
    assert torch.equal(mask["fc.weight"], current["fc.weight"])
    with pytest.raises(ValueError, match="'head.*' matches no scored parameter"):
        layerwise_prune_mask(scores, {"head.*": 0.5})
    with pytest.raises(ValueError, match=r"sparsity\['layer1\.\*'\] must be a number in \[0, 1\)"):
        layerwise_prune_mask(scores, {"layer1.*": 1.0})


def test_iterative_pruning_only_shrinks_and_never_revives() -> None:
    params = prunable_parameters(_net())
    total = sum(p.numel() for p in params.values())
    mask = None
    sparsity = 0.0
    for round_index in range(6):
        sparsity = sparsity_after_step(sparsity, 0.3)
        new = global_prune_mask(random_scores(params, seed=round_index), sparsity, current_mask=mask)
        assert new.num_pruned() == round(sparsity * total)
        if mask is not None:
            assert _keep_is_subset(new, mask)
        mask = new
    assert mask is not None
    assert global_prune_mask(random_scores(params, seed=99), 0.1, current_mask=mask) == mask
    layerwise = layerwise_prune_mask(random_scores(params, seed=5), 0.2, current_mask=mask)
    assert layerwise == mask, "a target below the current sparsity must not revive weights"
    deeper = layerwise_prune_mask(random_scores(params, seed=6), 0.95, current_mask=mask)
    assert _keep_is_subset(deeper, mask)
    assert all(int((~deeper[n]).sum()) == round(0.95 * deeper[n].numel()) for n in deeper)


def test_selection_input_errors() -> None:
    scores = {"w": torch.randn(10)}
    for bad in (1.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"must be a number in \[0, 1\)"):
            global_prune_mask(scores, bad)
    with pytest.raises(TypeError, match="number in"):
        global_prune_mask(scores, True)
    with pytest.raises(ValueError, match="NaN"):
        global_prune_mask({"w": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(ValueError, match="no scores: other"):
        global_prune_mask(scores, 0.5, current_mask=PruningMask({"other": torch.ones(3, dtype=torch.bool)}))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        global_prune_mask(scores, 0.5, current_mask=PruningMask({"w": torch.ones(3, dtype=torch.bool)}))
    with pytest.raises(ValueError, match="fraction_of_remaining"):
        sparsity_after_step(0.5, 1.0)
    assert check_sparsity(0) == 0.0
    assert sparsity_after_step(0.5, 0.5) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- schedules


def test_discrete_schedules() -> None:
    assert one_shot(0.9) == [0.9]
    steps = fixed_steps(0.5, 0.1)
    assert len(steps) == 7 and steps[-1] == 0.5
    assert steps[:3] == pytest.approx([0.1, 0.19, 0.271])
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert fixed_steps(0.19, 0.1) == pytest.approx([0.1, 0.19])
    assert fixed_steps(0.3, 0.1, initial=0.5) == []
    assert geometric(0.2, 3) == pytest.approx([0.2, 0.36, 0.488])
    assert linear_steps(0.9, 0.1) == pytest.approx([0.1 * k for k in range(1, 10)])
    assert linear_steps(0.75, 0.1)[-2:] == pytest.approx([0.7, 0.75])
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        fixed_steps(0.5, 0.0)
    with pytest.raises(ValueError, match="at most"):
        fixed_steps(0.9, 1e-6)
    with pytest.raises(TypeError, match="rounds"):
        geometric(0.2, 2.0)


def test_cubic_schedule_endpoints_and_monotonicity() -> None:
    values = [cubic_sparsity(t, 10, 110, 0.05, 0.9) for t in range(0, 130)]
    assert values[0] == values[10] == pytest.approx(0.05)
    assert values[110] == values[-1] == pytest.approx(0.9)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert cubic_sparsity(60, 10, 110, 0.0, 0.8) == pytest.approx(0.8 * (1 - 0.5**3))
    deltas = [b - a for a, b in zip(values[10:110], values[11:111])]
    assert deltas[0] > deltas[-1], "AGP prunes fastest early"
    with pytest.raises(ValueError, match="greater than start_step"):
        cubic_sparsity(0, 5, 5, 0.0, 0.5)
    with pytest.raises(ValueError, match="at least initial"):
        cubic_sparsity(0, 0, 5, 0.6, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        cubic_sparsity(0, 0, 5, 0.0, 1.0)


# ----------------------------------------------------------------------------- enforcement

_OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4),
    "adamw_amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2, amsgrad=True),
}


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, autocast: bool) -> None:
    inputs = torch.randn(8, 3, 8, 8)
    targets = torch.randint(0, 10, (8,))
    optimizer.zero_grad(set_to_none=True)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else nullcontext()
    with context:
        loss = nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()


def _pruned_after_dense_training(
    optimizer_name: str, autocast: bool
) -> tuple[nn.Module, torch.optim.Optimizer, PruningMask]:
    model = _net(seed=11)
    optimizer = _OPTIMIZERS[optimizer_name](list(model.parameters()))
    for _ in range(3):  # dense steps fill momentum / Adam moments at soon-to-be-pruned positions
        _train_step(model, optimizer, autocast)
        optimizer.step()
    mask = global_prune_mask(magnitude_scores(prunable_parameters(model)), 0.6)
    mask.apply_(model)
    return model, optimizer, mask


def _pruned_values(model: nn.Module, mask: PruningMask) -> Tensor:
    named = dict(model.named_parameters())
    return torch.cat([named[n].detach()[~keep] for n, keep in mask.items()])


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
@pytest.mark.parametrize("optimizer_name", list(_OPTIMIZERS))
@pytest.mark.parametrize("use_enforcer", [True, False], ids=["enforcer", "functions"])
def test_pruned_weights_stay_exactly_zero(optimizer_name: str, autocast: bool, use_enforcer: bool) -> None:
    torch.manual_seed(0)
    model, optimizer, mask = _pruned_after_dense_training(optimizer_name, autocast)
    kept_before = model.conv2.weight.detach()[mask["conv2.weight"]].clone()
    enforcer = MaskEnforcer(model, mask)
    if use_enforcer:
        enforcer.clear_optimizer_state_(optimizer)
    else:
        clear_pruned_optimizer_state_(optimizer, model, mask)
    for _ in range(20):
        _train_step(model, optimizer, autocast)
        if use_enforcer:
            enforcer.zero_gradients_()
        else:
            zero_pruned_gradients_(mask, model)
        optimizer.step()
        assert bool((_pruned_values(model, mask) == 0).all()), "the optimizer step moved a pruned weight"
        if use_enforcer:
            enforcer.zero_weights_()
        else:
            zero_pruned_weights_(mask, model)
    assert bool((_pruned_values(model, mask) == 0).all())
    kept_after = model.conv2.weight.detach()[mask["conv2.weight"]]
    assert not torch.equal(kept_after, kept_before), "kept weights must train"


@pytest.mark.parametrize("optimizer_name", list(_OPTIMIZERS))
def test_control_without_gradient_zeroing_weights_move(optimizer_name: str) -> None:
    torch.manual_seed(0)
    model, optimizer, mask = _pruned_after_dense_training(optimizer_name, autocast=False)
    clear_pruned_optimizer_state_(optimizer, model, mask)
    _train_step(model, optimizer, autocast=False)
    optimizer.step()
    assert int((_pruned_values(model, mask) != 0).sum()) > 0


@pytest.mark.parametrize("optimizer_name", list(_OPTIMIZERS))
def test_control_without_state_clearing_weights_move(optimizer_name: str) -> None:
    torch.manual_seed(0)
    model, optimizer, mask = _pruned_after_dense_training(optimizer_name, autocast=False)
    _train_step(model, optimizer, autocast=False)
    zero_pruned_gradients_(mask, model)
    optimizer.step()
    assert int((_pruned_values(model, mask) != 0).sum()) > 0


def test_clear_state_zeroes_moments_and_keeps_step() -> None:
    torch.manual_seed(0)
    model, optimizer, mask = _pruned_after_dense_training("adamw_amsgrad", autocast=False)
    clear_pruned_optimizer_state_(optimizer, model, mask)
    state = optimizer.state[model.conv1.weight]
    pruned = ~mask["conv1.weight"]
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert bool((state[key][pruned] == 0).all()) and bool((state[key][~pruned] != 0).any())
    assert float(state["step"]) == 3.0


def test_enforcer_follows_dtype_change_and_rejects_bad_input() -> None:
    model = _net()
    mask = global_prune_mask(random_scores(prunable_parameters(model), seed=0), 0.5)
    enforcer = MaskEnforcer(model, mask)
    model.double()
    with torch.no_grad():
        model.fc.weight.fill_(1.0)
    enforcer.zero_weights_()
    assert model.fc.weight.dtype == torch.float64
    assert torch.equal(model.fc.weight != 0, mask["fc.weight"])
    with pytest.raises(ValueError, match="has shape"):
        MaskEnforcer(nn.Linear(3, 3), PruningMask({"weight": torch.ones(2, 2, dtype=torch.bool)}))
    with pytest.raises(TypeError, match="Optimizer"):
        enforcer.clear_optimizer_state_(object())
