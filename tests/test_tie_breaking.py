"""Ties at the cut are broken by seeded keys of (name, index), never by parameter order (issue 16)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lit_prune.pruning import PruningMask, global_prune_mask, layerwise_prune_mask


def _grasp_like_scores() -> dict[str, Tensor]:
    """Three layers whose dead units score exactly zero (3,400 of 9,000): low cuts fall among them."""
    generator = torch.Generator().manual_seed(0)
    scores = {}
    layers = (("features.0.weight", 2000, 0.5), ("features.3.weight", 6000, 0.3), ("fc.weight", 1000, 0.6))
    for name, size, dead in layers:
        values = torch.randn(size, generator=generator, dtype=torch.float64).abs() + 0.1
        values[torch.randperm(size, generator=generator)[: round(dead * size)]] = 0.0
        scores[name] = values
    return scores


def _pruned_per_layer(mask: PruningMask) -> dict[str, int]:
    return {name: int((~keep).sum()) for name, keep in mask.items()}


@pytest.mark.parametrize("sparsity", [0.1, 0.2, 0.3])
def test_global_per_layer_counts_do_not_depend_on_parameter_order(sparsity: float) -> None:
    scores = _grasp_like_scores()
    zeros = sum(int((s == 0).sum()) for s in scores.values())
    assert round(sparsity * 9000) < zeros, "the cut must fall among the tied zeros"
    forward = global_prune_mask(scores, sparsity)
    orders = (
        ["fc.weight", "features.3.weight", "features.0.weight"],
        ["features.3.weight", "fc.weight", "features.0.weight"],
    )
    for order in orders:
        permuted = global_prune_mask({name: scores[name] for name in order}, sparsity)
        assert list(permuted) == order
        assert _pruned_per_layer(permuted) == _pruned_per_layer(forward)
        assert all(torch.equal(permuted[name], forward[name]) for name in scores)
    assert forward.num_pruned() == round(sparsity * forward.num_total())


def test_ties_are_spread_over_the_layers_not_taken_from_the_first() -> None:
    scores = {f"layer{i}.weight": torch.zeros(4000) for i in range(3)}
    mask = global_prune_mask(scores, 0.5)
    assert mask.num_pruned() == 6000
    for name, pruned in _pruned_per_layer(mask).items():
        assert abs(pruned - 2000) < 200, f"{name} lost {pruned} of its 4000 tied weights, expected about 2000"
    assert global_prune_mask(scores, 0.5).equals(mask), "deterministic"
    other_seed = global_prune_mask(scores, 0.5, tie_seed=1)
    assert other_seed.num_pruned() == 6000 and not other_seed.equals(mask)


def test_ties_never_override_the_scores_and_respect_the_current_mask() -> None:
    scores = {"a": torch.tensor([0.0, 0.0, 1.0, 2.0, 0.0]), "b": torch.tensor([0.0, 3.0, 0.0, 0.5])}
    current = PruningMask({"a": torch.tensor([False, True, True, True, True]), "b": torch.ones(4, dtype=torch.bool)})
    mask = global_prune_mask(scores, 0.45, current)  # 4 of 9: the pruned a[0] and 3 of the 4 other zeros
    assert mask.num_pruned() == 4 and not bool(mask["a"][0])
    assert bool(mask["a"][3]) and bool(mask["b"][1]) and bool(mask["a"][2]) and bool(mask["b"][3])
    third = global_prune_mask(scores, 0.3, current)  # 3 of 9: a[0] and 2 of the 4 other zeros
    assert third.num_pruned() == 3 and not bool(third["a"][0])
    assert all(bool(third[n][s != 0].all()) for n, s in scores.items()), "only tied zeros are chosen among"


def test_layerwise_ties_use_the_same_seeded_keys() -> None:
    scores = {"a": torch.zeros(1000), "b": torch.zeros(1000)}
    mask = layerwise_prune_mask(scores, 0.4)
    assert _pruned_per_layer(mask) == {"a": 400, "b": 400}
    assert not torch.equal(mask["a"], torch.arange(1000) >= 400), "not the first 400 positions"
    reversed_order = layerwise_prune_mask({"b": scores["b"], "a": scores["a"]}, 0.4)
    assert all(torch.equal(reversed_order[name], mask[name]) for name in scores)
    with pytest.raises(TypeError, match="tie_seed must be an int"):
        layerwise_prune_mask(scores, 0.4, tie_seed=0.5)
