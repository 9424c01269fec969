"""Every registered score, checked the same way, and the registry's own rules.

The checks parametrized over ``list_scores()``: output shapes; higher = more important (a weight
the current mask pruned, or a unit that is dead and lies at its layer's geometric median,
never outranks a live one); no pruned weight is revived; seeded scores repeat and unseeded ones
do not depend on the random state; the network's weights, buffers, gradients and train/eval
modes are left as they were.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.models import create_model
from lit_prune.pruning import (
    PruningMask,
    get_score,
    list_scores,
    prunable_groups,
    prunable_parameters,
    register_score,
    structured_importance,
)
from lit_prune.pruning.score_registry import NEEDS, SCORE_KINDS
from lit_prune.pruning.unstructured import UnstructuredPruner
from tests.pruning_helpers import randomize_batch_norms

SHIPPED = {
    "weights": ["grasp", "lamp", "magnitude", "random", "snip", "synflow"],
    "groups": ["bn_scale", "fpgm", "l1", "l2", "taylor"],
}
DEAD_GROUP = "layer1.0.conv1"


def _network() -> nn.Module:
    """ResNet-20 with random batch-norm statistics and affine parameters, in training mode."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    randomize_batch_norms(model)
    model.layer2.eval()  # a mixed state, which scoring must leave as it is
    return model


def _batches() -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(6, 3, 32, 32, generator=generator), torch.arange(6) % 10),
        (torch.randn(6, 3, 32, 32, generator=generator), (torch.arange(6) + 3) % 10),
    ]


def _half_mask(params: dict[str, nn.Parameter]) -> PruningMask:
    generator = torch.Generator().manual_seed(2)
    return PruningMask({name: torch.rand(p.shape, generator=generator) > 0.5 for name, p in params.items()})


def _inputs(name: str, model: nn.Module, seed: int = 0) -> dict[str, Any]:
    """What a caller supplies for the score's declared needs."""
    needs = get_score(name).needs
    inputs: dict[str, Any] = {"model": model, "seed": seed}
    if "batches" in needs:
        inputs["batches"] = _batches()
    if "input_shape" in needs:
        inputs["input_shape"] = (3, 32, 32)
    return inputs


def _weight_scores(name: str, model: nn.Module, mask: PruningMask | None, seed: int = 0) -> dict[str, Tensor]:
    params = prunable_parameters(model)
    return get_score(name)(params=params, current_mask=mask, **_inputs(name, model, seed))


def _group_scores(name: str, model: nn.Module) -> dict[str, Tensor]:
    groups = prunable_groups(model)
    inputs = {key: value for key, value in _inputs(name, model).items() if key != "model"}
    return structured_importance(model, groups, name, **inputs)


def _scores(name: str, model: nn.Module, mask: PruningMask | None = None, seed: int = 0) -> dict[str, Tensor]:
    if get_score(name).kind == "weights":
        return _weight_scores(name, model, mask, seed)
    return _group_scores(name, model)


def _snapshot(model: nn.Module) -> tuple[dict[str, Tensor], list[bool], list[bool]]:
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    return state, [m.training for m in model.modules()], [p.grad is None for p in model.parameters()]


def _with_dead_median_unit(model: nn.Module) -> nn.Module:
    """Units 0 and 1 of ``layer1.0.conv1`` are dead (filter, scale and shift zero); the other
    filters come in pairs ``F, -F``, so the dead units are also the filters' geometric median."""
    block = model.layer1[0]
    with torch.no_grad():
        filters = block.conv1.weight
        filters[0:2] = 0.0
        filters[3::2] = -filters[2::2]
        block.bn1.weight[0:2] = 0.0
        block.bn1.bias[0:2] = 0.0
    return model


def test_the_shipped_scores_are_registered_with_their_kind() -> None:
    assert list_scores("weights") == SHIPPED["weights"]
    assert list_scores("groups") == SHIPPED["groups"]
    assert set(list_scores()) == set(SHIPPED["weights"]) | set(SHIPPED["groups"])
    assert get_score("snip").needs == {"batches", "gradients"}
    assert get_score("synflow").needs == {"input_shape", "gradients"} and get_score("synflow").iterative
    assert get_score("random").needs == {"seed"}
    assert get_score("bn_scale").needs == {"batch_norm"}
    assert get_score("grasp").calibration_splits == 2 and get_score("grasp").options["temperature"] == 200.0
    assert get_score("lamp").scopes == ("global",)


@pytest.mark.parametrize("name", list_scores())
def test_every_score(name: str) -> None:
    score = get_score(name)
    assert score.kind in SCORE_KINDS and score.needs <= set(NEEDS)
    model = _network()
    params = prunable_parameters(model)
    mask = _half_mask(params) if score.kind == "weights" else None
    if mask is not None:
        mask.apply_(model)
    else:
        _with_dead_median_unit(model)
    before = _snapshot(model)
    torch.manual_seed(123)
    scores = _scores(name, model, mask)

    after = _snapshot(model)
    assert after[1] == before[1], "train/eval modes changed"
    assert after[2] == before[2], "scoring wrote .grad"
    for key, tensor in before[0].items():
        assert torch.equal(after[0][key], tensor), f"{key} changed"

    if score.kind == "weights":
        assert list(scores) == list(params)
        for param_name, values in scores.items():
            assert values.shape == params[param_name].shape and values.is_floating_point(), param_name
            keep = mask[param_name]
            assert values[~keep].max() <= values[keep].min(), f"{param_name}: a pruned weight outranks a survivor"
        pruner = UnstructuredPruner(score=name)
        data = {key: value for key, value in _inputs(name, model).items() if key not in ("model", "seed")}
        deeper = pruner.mask(model, 0.8, current_mask=mask, iterations=2, **data)
        for param_name, keep in deeper.items():
            assert not (keep & ~mask[param_name]).any(), f"{param_name}: a pruned weight was revived"
        assert deeper.num_pruned() == round(0.8 * deeper.num_total())
    else:
        groups = prunable_groups(model)
        assert list(scores) == list(groups)
        for group_name, values in scores.items():
            assert values.shape == (groups[group_name].size,) and values.is_floating_point(), group_name
        dead = scores[DEAD_GROUP]
        assert dead[:2].max() <= dead[2:].min(), "a dead unit outranks a live one"

    torch.manual_seed(456)
    again = _scores(name, model, mask)
    assert all(torch.equal(again[key], scores[key]) for key in scores), "the same inputs gave other scores"
    if "seed" in score.needs:
        other = _scores(name, model, mask, seed=1)
        assert any(not torch.equal(other[key], scores[key]) for key in scores), "the seed does not matter"


def test_unknown_names_and_kinds_are_refused_with_the_registered_names() -> None:
    with pytest.raises(UserError, match=r"unknown score 'obd'.*magnitude.*fpgm"):
        get_score("obd")
    with pytest.raises(UserError, match=r"ranks structured groups.*needs a score of single weights"):
        get_score("fpgm", kind="weights")
    with pytest.raises(UserError, match=r"cannot import module 'no_such_package.scores'"):
        get_score("no_such_package.scores.mine")
    with pytest.raises(UserError, match=r"has no attribute 'nothing'"):
        get_score("math.nothing")
    with pytest.raises(UserError, match=r"is not a valid score.*register_score"):
        get_score("math.sqrt")
    with pytest.raises(ValueError, match="unknown selection scope|scope must be one of"):
        UnstructuredPruner(scope="local")
    with pytest.raises(UserError, match="'layerwise' is now called 'layer'"):
        UnstructuredPruner(scope="layerwise")
    with pytest.raises(UserError, match="meant for scope 'global'"):
        UnstructuredPruner(score="lamp", scope="layer")


def test_a_registered_function_is_found_by_its_import_path() -> None:
    assert get_score("lit_prune.pruning.lamp.lamp_scores") is get_score("lamp")
    assert get_score("lit_prune.pruning.fpgm.fpgm_importance", kind="groups") is get_score("fpgm")


def test_registration_checks_the_declaration_against_the_signature() -> None:
    def weights(params: dict[str, Tensor]) -> dict[str, Tensor]:
        return dict(params)

    with pytest.raises(ValueError, match="already registered"):
        register_score("magnitude", kind="weights")(weights)
    with pytest.raises(ValueError, match="without dots"):
        register_score("my.score", kind="weights")(weights)
    with pytest.raises(ValueError, match="kind must be one of"):
        register_score("mine", kind="filters")(weights)
    with pytest.raises(ValueError, match="unknown needs"):
        register_score("mine", kind="weights", needs=("labels",))(weights)
    with pytest.raises(TypeError, match="takes a parameter of that name"):
        register_score("mine", kind="weights", needs=("batches",))(weights)
    with pytest.raises(TypeError, match="has no 'model'"):
        register_score("mine", kind="groups")(weights)

    def needs_a_default(params: dict[str, Tensor], strength: float) -> dict[str, Tensor]:
        return dict(params)

    with pytest.raises(TypeError, match="'strength' is not one of the inputs"):
        register_score("mine", kind="weights")(needs_a_default)
    assert "mine" not in list_scores()


def test_a_score_that_needs_batches_says_so_when_they_are_missing() -> None:
    model = _network()
    with pytest.raises(UserError, match="score 'snip' needs calibration batches"):
        get_score("snip")(model=model, params=prunable_parameters(model))
    with pytest.raises(UserError, match="score 'taylor' needs calibration batches"):
        structured_importance(model, prunable_groups(model), "taylor")
