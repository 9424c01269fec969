"""Tests of the per-layer sensitivity sweep, its plot and JSON form, and sparsity allocation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lit_prune.pruning import (
    global_prune_mask,
    layerwise_prune_mask,
    magnitude_scores,
    prunable_parameters,
    random_scores,
)
from lit_prune.pruning.sensitivity import (
    DEFAULT_SENSITIVITY_SPARSITIES,
    SensitivityResult,
    allocate_layer_sparsity,
    predict_metric,
    sensitivity_sweep,
)
from lit_prune.report.sensitivity_plot import plot_sensitivity, sensitivity_figure

VGG16_BN_LAYERS = [
    *(f"features.{i}.weight" for i in (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)),
    "classifier.0.weight",
    "classifier.3.weight",
    "classifier.6.weight",
]


class _SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 10, 3, padding=1)
        self.fc = nn.Linear(10, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def _net(seed: int = 0) -> _SmallNet:
    torch.manual_seed(seed)
    net = _SmallNet()
    with torch.no_grad():  # signed zeros, which a restore by value would lose
        net.conv2.weight.view(-1)[:5] = -0.0
    return net


def _bits(tensor: Tensor) -> Tensor:
    return tensor.detach().clone().reshape(-1).view(torch.uint8)


def _nonzero_fraction(params: dict[str, Tensor]) -> float:
    total = sum(p.numel() for p in params.values())
    return sum(int(p.count_nonzero()) for p in params.values()) / total


def _agreement_with(reference: nn.Module) -> Callable[[nn.Module], float]:
    """An ``evaluate``: minus the distance of a model's outputs from ``reference``'s (higher = better)."""
    inputs = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        target = copy.deepcopy(reference).eval()(inputs)

    def evaluate(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return -float((model(inputs) - target).pow(2).mean())

    return evaluate


def _synthetic(
    curves: dict[str, list[tuple[float, float]]], counts: dict[str, int], **kwargs: object
) -> SensitivityResult:
    return SensitivityResult(curves=curves, baseline=0.9, param_counts=counts, **kwargs)


# ---------------------------------------------------------------------------------------- sweep


def test_sweep_restores_weights_bitwise_after_each_probe_and_prunes_one_layer_exactly() -> None:
    model = _net()
    model.train()
    params = prunable_parameters(model)
    original = {name: _bits(tensor) for name, tensor in model.state_dict().items()}
    zeros_before = {name: int((p == 0).sum()) for name, p in params.items()}
    probes: list[dict[str, int]] = []

    def evaluate(net: nn.Module) -> float:
        state = net.state_dict()
        changed = {name: t for name, t in state.items() if not torch.equal(_bits(t), original[name])}
        assert len(probes) == 0 or len(changed) == 1  # the previous probe was undone, only one layer differs
        probes.append({name: int((tensor == 0).sum()) for name, tensor in changed.items()})
        net.eval()  # an evaluate that switches modes must not leak that into the model
        return _nonzero_fraction(params)

    sparsities = (0.5, 0.0, 0.2, 0.9)
    result = sensitivity_sweep(model, params, evaluate, sparsities=sparsities)

    for name, tensor in model.state_dict().items():
        assert torch.equal(_bits(tensor), original[name]), name
    assert all(module.training for module in model.modules())
    assert list(result.curves) == list(params)
    total = sum(p.numel() for p in params.values())
    baseline = 1 - sum(zeros_before.values()) / total
    assert result.baseline == pytest.approx(baseline)
    for name, param in params.items():
        assert [s for s, _ in result.curves[name]] == [0.0, 0.2, 0.5, 0.9]
        for sparsity, value in result.curves[name]:
            pruned = max(round(sparsity * param.numel()), zeros_before[name])
            assert value == pytest.approx(baseline - (pruned - zeros_before[name]) / total)
    assert probes[0] == {}  # the baseline
    # Sparsity 0 prunes nothing that is not already zero, so it reuses the baseline: 3 probes per layer.
    assert len(probes) == 1 + 3 * len(params)
    expected = [
        {name: max(round(s * p.numel()), zeros_before[name])} for name, p in params.items() for s in (0.2, 0.5, 0.9)
    ]
    assert probes[1:] == expected
    assert result.param_counts == {name: p.numel() for name, p in params.items()}
    assert result.current_sparsity == dict.fromkeys(params, 0.0)


def test_sweep_keeps_pruned_weights_pruned_and_records_the_current_sparsity() -> None:
    model = _net()
    params = prunable_parameters(model)
    mask = global_prune_mask(random_scores(params, seed=1), 0.3)
    mask.apply_(model)
    agreement = _agreement_with(model)

    def evaluate(net: nn.Module) -> float:
        named = dict(net.named_parameters())
        assert all(bool((named[name][~keep] == 0).all()) for name, keep in mask.items())
        return agreement(net)

    result = sensitivity_sweep(model, params, evaluate, sparsities=(0.1, 0.5, 0.8), current_mask=mask)
    for name, sparsity in mask.layer_sparsity().items():
        assert result.current_sparsity[name] == pytest.approx(sparsity)
        below = [value for s, value in result.curves[name] if round(s * params[name].numel()) <= (~mask[name]).sum()]
        assert all(value == result.baseline for value in below)
        assert result.curves[name][-1][1] < result.baseline


def test_sweep_restores_the_layer_when_evaluate_fails() -> None:
    model = _net()
    params = prunable_parameters(model)
    original = {name: _bits(p) for name, p in params.items()}
    calls: list[int] = []

    def evaluate(net: nn.Module) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("evaluation failed")
        return 0.5

    with pytest.raises(RuntimeError, match="evaluation failed"):
        sensitivity_sweep(model, params, evaluate)
    assert all(torch.equal(_bits(p), original[name]) for name, p in params.items())


def test_sweep_errors_name_the_problem() -> None:
    model = _net()
    params = prunable_parameters(model)
    with pytest.raises(ValueError, match="must not repeat"):
        sensitivity_sweep(model, params, lambda net: 1.0, sparsities=(0.1, 0.1))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        sensitivity_sweep(model, params, lambda net: 1.0, sparsities=(0.5, 1.0))
    with pytest.raises(TypeError, match="must return a number"):
        sensitivity_sweep(model, params, lambda net: "high")  # type: ignore[arg-type, return-value]
    with pytest.raises(ValueError, match="must be finite"):
        sensitivity_sweep(model, params, lambda net: float("nan"))
    with pytest.raises(ValueError, match="is not the parameter"):
        sensitivity_sweep(model, prunable_parameters(_net()), lambda net: 1.0)


# ---------------------------------------------------------------------------- json and the plot


def test_result_round_trips_through_json() -> None:
    model = _net()
    params = prunable_parameters(model)
    mask = global_prune_mask(random_scores(params, seed=2), 0.2)
    mask.apply_(model)
    result = sensitivity_sweep(model, params, _agreement_with(model), current_mask=mask, metric="agreement")
    restored = SensitivityResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert restored == result
    assert restored.to_dict()["layers"]["fc.weight"]["param_count"] == 40


def test_from_dict_rejects_malformed_data() -> None:
    good = _synthetic({"a": [(0.0, 0.9), (0.5, 0.8)]}, {"a": 10}).to_dict()
    with pytest.raises(ValueError, match="lacks 'baseline'"):
        SensitivityResult.from_dict({key: value for key, value in good.items() if key != "baseline"})
    unsorted = json.loads(json.dumps(good))
    unsorted["layers"]["a"]["curve"] = [[0.5, 0.8], [0.0, 0.9]]
    with pytest.raises(ValueError, match="strictly increasing"):
        SensitivityResult.from_dict(unsorted)
    no_count = json.loads(json.dumps(good))
    del no_count["layers"]["a"]["param_count"]
    with pytest.raises(ValueError, match="'param_count' and 'curve'"):
        SensitivityResult.from_dict(no_count)
    with pytest.raises(ValueError, match="param_counts must name exactly"):
        SensitivityResult({"a": [(0.0, 0.9)]}, 0.9, {"b": 3})


def _vgg_like_result() -> SensitivityResult:
    torch.manual_seed(0)
    curves = {}
    for index, name in enumerate(VGG16_BN_LAYERS):
        steepness = 0.5 + index / 4
        curves[name] = [(s, 0.93 - 0.9 * s ** (6 / steepness) * 0.9) for s in DEFAULT_SENSITIVITY_SPARSITIES]
    counts = {name: 1000 * (index + 1) for index, name in enumerate(VGG16_BN_LAYERS)}
    return SensitivityResult(curves=curves, baseline=0.93, param_counts=counts)


def test_plot_writes_a_readable_png_for_the_vgg16_bn_layers(tmp_path: Path) -> None:
    result = _vgg_like_result()
    figure = sensitivity_figure(result)
    axes = figure.axes[0]
    lines = [line for line in axes.get_lines() if not line.get_label().startswith("baseline")]
    assert len(lines) == len(VGG16_BN_LAYERS)
    styles = {(str(line.get_color()), line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == len(lines)  # every curve tells itself apart
    assert len({str(line.get_color()) for line in lines}) == len(lines)
    legend_texts = [text.get_text() for text in axes.get_legend().get_texts()]
    assert all(any(text.startswith(name) for text in legend_texts) for name in VGG16_BN_LAYERS)
    assert "%" in axes.get_xlabel() and "%" in axes.get_ylabel()
    assert axes.get_title()
    assert lines[0].get_ydata()[0] == pytest.approx(93.0)  # fractions shown as percent

    path = plot_sensitivity(result, tmp_path / "run" / "sensitivity.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1200 and height > 700  # legend outside the axes, enough room for 16 entries


# ----------------------------------------------------------------------------------- allocation


@pytest.mark.parametrize("target", [0.3, 0.55, 0.8])
def test_allocation_reaches_the_global_target_when_applied_layerwise(target: float) -> None:
    model = _net()
    params = prunable_parameters(model)
    result = sensitivity_sweep(model, params, _agreement_with(model))
    allocation = allocate_layer_sparsity(result, target, result.param_counts)
    assert list(allocation) == list(params)
    assert all(0.0 <= s <= 0.9 for s in allocation.values())

    mask = layerwise_prune_mask(magnitude_scores(params), allocation)
    wanted = round(target * mask.num_total())
    assert abs(mask.num_pruned() - wanted) <= len(params)
    assert mask.num_pruned() == wanted  # in fact exact: every layer's fraction is a whole count


def test_allocation_prunes_the_insensitive_layer_first() -> None:
    flat = [(s, 0.9) for s in DEFAULT_SENSITIVITY_SPARSITIES]
    steep = [(s, 0.9 - 0.8 * s) for s in DEFAULT_SENSITIVITY_SPARSITIES]
    result = _synthetic({"steep": steep, "flat": flat}, {"steep": 1000, "flat": 1000})
    assert allocate_layer_sparsity(result, 0.45) == {"steep": 0.0, "flat": 0.9}

    small_flat = _synthetic({"steep": steep, "flat": flat}, {"steep": 1000, "flat": 100})
    allocation = allocate_layer_sparsity(small_flat, 0.5)
    assert allocation["flat"] == 0.9
    assert allocation["steep"] * 1000 + allocation["flat"] * 100 == pytest.approx(0.5 * 1100)


def _brute_force_best(result: SensitivityResult, target: float) -> float:
    """Best predicted metric over a 1 % grid for layers a and b, c taking the rest of the target."""
    counts = result.param_counts
    total = sum(counts.values())
    best = -float("inf")
    for a in range(0, 91):
        for b in range(0, 91):
            c = (target * total - a / 100 * counts["a"] - b / 100 * counts["b"]) / counts["c"]
            if 0.0 <= c <= 0.9:
                best = max(best, predict_metric(result, {"a": a / 100, "b": b / 100, "c": c}))
    return best


def test_allocation_is_optimal_for_convex_losses_against_a_brute_force_search() -> None:
    curves = {  # accuracy falls ever faster with sparsity: the usual shape, convex in the loss
        "a": [(0.0, 0.9), (0.2, 0.89), (0.5, 0.85), (0.7, 0.7), (0.9, 0.3)],
        "b": [(0.0, 0.9), (0.2, 0.9), (0.5, 0.88), (0.7, 0.86), (0.9, 0.8)],
        "c": [(0.0, 0.9), (0.3, 0.88), (0.6, 0.8), (0.9, 0.5)],
    }
    counts = {"a": 400, "b": 300, "c": 300}
    result = _synthetic(curves, counts)
    for target in (0.3, 0.5, 0.7):
        allocation = allocate_layer_sparsity(result, target)
        assert sum(allocation[n] * counts[n] for n in counts) == pytest.approx(target * 1000)
        assert predict_metric(result, allocation) >= _brute_force_best(result, target) - 1e-9


def test_allocation_of_non_convex_losses_beats_uniform_sparsity() -> None:
    curves = {
        "a": [(0.0, 0.9), (0.2, 0.89), (0.5, 0.85), (0.7, 0.7), (0.9, 0.3)],
        "b": [(0.0, 0.9), (0.2, 0.91), (0.5, 0.88), (0.7, 0.86), (0.9, 0.8)],  # a noisy bump up
        "c": [(0.0, 0.9), (0.3, 0.8), (0.6, 0.75), (0.9, 0.72)],  # costly at first, cheap later
    }
    counts = {"a": 400, "b": 300, "c": 300}
    result = _synthetic(curves, counts)
    allocation = allocate_layer_sparsity(result, 0.5)
    assert sum(allocation[n] * counts[n] for n in counts) == pytest.approx(500)
    predicted = predict_metric(result, allocation)
    assert predicted > predict_metric(result, dict.fromkeys(counts, 0.5)) + 0.01
    # Optimising the convex envelope may leave one layer between envelope vertices: close to optimal.
    assert predicted >= _brute_force_best(result, 0.5) - 0.01


def test_allocation_keeps_the_current_sparsity_as_a_floor() -> None:
    flat = [(s, 0.9) for s in DEFAULT_SENSITIVITY_SPARSITIES]
    steep = [(s, 0.9 - 0.8 * s) for s in DEFAULT_SENSITIVITY_SPARSITIES]
    result = _synthetic({"steep": steep, "flat": flat}, {"steep": 1000, "flat": 1000}, current_sparsity={"steep": 0.3})
    allocation = allocate_layer_sparsity(result, 0.6)
    assert allocation == {"steep": 0.3, "flat": 0.9}
    with pytest.raises(ValueError, match="below the sparsity the layers already have"):
        allocate_layer_sparsity(result, 0.1)
    with pytest.raises(ValueError, match="cannot be reached within the probed sparsities"):
        allocate_layer_sparsity(result, 0.95)
    with pytest.raises(ValueError, match="param_counts must name exactly"):
        allocate_layer_sparsity(result, 0.5, {"steep": 1000})


def test_allocation_of_a_real_sweep_respects_an_existing_mask() -> None:
    model = _net()
    params = prunable_parameters(model)
    mask = global_prune_mask(random_scores(params, seed=4), 0.4)
    mask.apply_(model)
    result = sensitivity_sweep(model, params, _agreement_with(model), current_mask=mask)
    allocation = allocate_layer_sparsity(result, 0.7)
    final = layerwise_prune_mask(magnitude_scores(params), allocation, current_mask=mask)
    assert final.num_pruned() == round(0.7 * final.num_total())
    assert all(not bool((final[name] & ~mask[name]).any()) for name in params)


def test_predicted_metric_adds_up_layer_losses() -> None:
    result = _synthetic({"a": [(0.0, 0.9), (0.5, 0.8)], "b": [(0.5, 0.7)]}, {"a": 10, "b": 10})
    # b's curve starts at 0.5; sparsity 0 is the baseline, so 0.25 interpolates to 0.8.
    assert predict_metric(result, {"a": 0.25, "b": 0.25}) == pytest.approx(0.9 - 0.05 - 0.1)
    with pytest.raises(ValueError, match="beyond the highest probed sparsity"):
        predict_metric(result, {"a": 0.6})


def test_default_sparsities_are_the_issue_list() -> None:
    assert DEFAULT_SENSITIVITY_SPARSITIES == (0.0, 0.1, 0.2, 0.5, 0.7, 0.8, 0.9)
