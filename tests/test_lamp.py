"""LAMP (Lee et al. 2021) against the paper's formula worked by hand, and in a pruning run."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from callbacks import MagnitudePruning
from lit_prune.pruning import PruningMask, global_prune_mask, lamp_scores
from tests.pruning_helpers import digits, make_module, make_trainer


def test_lamp_is_the_papers_formula_on_a_small_tensor() -> None:
    weight = torch.tensor([[0.5, -1.0, 2.0], [0.1, -3.0, 1.0]], dtype=torch.float64)
    # Sorted by magnitude: 0.1, 0.5, 1.0 (index 1), 1.0 (index 5), 2.0, 3.0; squares sum to 15.26.
    # score(u) = W[u]^2 / (sum of the squares of W[u] and every weight after it in that order).
    expected = torch.tensor(
        [
            [0.25 / 15.25, 1.0 / 15.0, 4.0 / 13.0],
            [0.01 / 15.26, 9.0 / 9.0, 1.0 / 14.0],
        ],
        dtype=torch.float64,
    )
    scores = lamp_scores({"w": weight})["w"]
    assert scores.dtype == torch.float64
    torch.testing.assert_close(scores, expected, rtol=1e-12, atol=0)


def test_lamp_counts_only_the_survivors_and_marks_the_pruned() -> None:
    weight = torch.tensor([3.0, -1.0, 2.0, 0.5])
    keep = torch.tensor([True, True, False, True])
    scores = lamp_scores({"w": weight}, current_mask=PruningMask({"w": keep}))["w"]
    # Survivors 0.5, 1.0, 3.0 (squares 0.25, 1, 9); the pruned 2.0 counts as zero.
    expected = torch.tensor([9.0 / 9.0, 1.0 / 10.0, -math.inf, 0.25 / 10.25], dtype=torch.float64)
    torch.testing.assert_close(scores, expected, rtol=1e-12, atol=0)
    assert torch.equal(lamp_scores({"z": torch.zeros(3)})["z"], torch.zeros(3, dtype=torch.float64))


def test_global_lamp_keeps_each_layers_largest_weight_where_magnitude_empties_a_layer() -> None:
    small = torch.tensor([0.01, 0.02, 0.03, 0.04])
    large = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    params = {"small": small, "large": large}
    by_magnitude = global_prune_mask({name: p.abs() for name, p in params.items()}, 0.5)
    assert not by_magnitude["small"].any(), "global magnitude removes the whole small layer"
    by_lamp = global_prune_mask(lamp_scores(params), 0.5)
    assert by_lamp.num_pruned() == 5
    assert by_lamp["small"][-1] and by_lamp["large"][-1], "LAMP's top weight of every layer scores 1"


def test_magnitude_pruning_with_lamp_scores_reaches_the_target() -> None:
    L.seed_everything(0)
    module = make_module()
    callback = MagnitudePruning(target_sparsity=0.9, score="lamp", exclude=["fc.weight"])
    make_trainer(None, max_epochs=1, callbacks=[callback]).fit(module, digits())
    mask = module.pruning_mask
    assert mask.num_pruned() == round(0.9 * mask.num_total())
    assert all(keep.any() for keep in mask.values()), "every layer keeps a weight"
    assert callback.describe_method() == "magnitude one-shot global 90% (lamp scores)"
    with pytest.raises(ValueError, match="meant for scope 'global'"):
        MagnitudePruning(target_sparsity=0.5, score="lamp", scope="layer")
