"""FPGM (He et al. 2019) against distances computed by hand, and as the score of ChannelPruning."""

from __future__ import annotations

import copy
import math

import lightning as L
import torch

from callbacks import ChannelPruning
from lit_prune.models import create_model
from lit_prune.pruning import fpgm_importance, prunable_groups, structured_importance
from tests.pruning_helpers import digits, make_module, make_trainer


def _distance_sums_by_hand(weight: torch.Tensor) -> list[float]:
    """For each filter, the sum of its Euclidean distances to every filter of the layer."""
    filters = [f.reshape(-1).tolist() for f in weight]
    return [sum(math.sqrt(sum((a - b) ** 2 for a, b in zip(mine, other))) for other in filters) for mine in filters]


def test_fpgm_is_the_summed_distance_to_the_layers_filters() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    groups = prunable_groups(model)
    scores = fpgm_importance(model, groups)
    assert structured_importance(model, groups, "fpgm").keys() == scores.keys()

    internal = scores["layer1.0.conv1"]
    expected = torch.tensor(_distance_sums_by_hand(model.layer1[0].conv1.weight.detach()))
    torch.testing.assert_close(internal, expected, rtol=1e-5, atol=0)

    stream_producers = [model.conv1.weight] + [block.conv2.weight for block in model.layer1]
    coupled = torch.tensor([sum(v) for v in zip(*(_distance_sums_by_hand(w.detach()) for w in stream_producers))])
    torch.testing.assert_close(scores["layer1"], coupled, rtol=1e-5, atol=0)


def test_fpgm_keeps_a_small_filter_far_from_the_median_that_l1_would_remove() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    with torch.no_grad():
        weight = model.layer1[0].conv1.weight
        weight.copy_(1.0 + 0.01 * torch.randn_like(weight))
        weight[15] = 0.1
    groups = {"layer1.0.conv1": prunable_groups(model)["layer1.0.conv1"]}
    fpgm = fpgm_importance(model, groups)["layer1.0.conv1"]
    l1 = structured_importance(model, groups, "l1")["layer1.0.conv1"]
    assert int(l1.argmin()) == 15, "the smallest filter has the lowest norm"
    assert int(fpgm.argmax()) == 15, "but it is the farthest from the others, so FPGM keeps it first"


def test_channel_pruning_removes_the_filters_nearest_the_median() -> None:
    L.seed_everything(0)
    module = make_module()
    initial = copy.deepcopy(module.network)
    callback = ChannelPruning(removed_fraction=0.2, prune_epoch=0, score="fpgm", scope="layer", include_residual=False)
    make_trainer(None, max_epochs=1, callbacks=[callback]).fit(module, digits())

    by_hand = torch.tensor(_distance_sums_by_hand(initial.layer2[1].conv1.weight.detach()))
    (record,) = [r for r in module.surgery_history if r["group"] == "layer2.1.conv1"]
    removed = sorted(set(range(record["size"])) - set(record["keep"]))
    assert removed == sorted(torch.argsort(by_hand, stable=True)[: len(removed)].tolist())
    assert callback.describe_method().startswith("structured channels 20% params (fpgm, layer)")
