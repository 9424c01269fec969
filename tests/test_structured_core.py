"""Tests of structured pruning: coupled groups, channel/head surgery, importance, selection, history."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torchvision.models import resnet50

from lit_prune.models import CifarVGG, create_model
from lit_prune.pruning import PruningMask, prunable_parameters
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.channel_surgery import remove_channels_, shrink_groups_
from lit_prune.pruning.group_scores import taylor_from_gradients
from lit_prune.pruning.head_surgery import head_groups, mlp_unit_groups, remove_heads_, remove_mlp_units_
from lit_prune.pruning.structured_importance import (
    removed_parameter_fraction,
    select_channels,
    select_channels_for_removed_fraction,
    structured_importance,
)
from lit_prune.pruning.surgery_history import check_history, remap_mask, replay_history
from tests.pruning_helpers import randomize_batch_norms

SMALL_VGG_CONFIG = (8, "M", 16, "M", 16, "M", 512, "M")


def _small_vgg() -> CifarVGG:
    return CifarVGG(SMALL_VGG_CONFIG, num_classes=10)


def _small_vit() -> VisionTransformer:
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)


def _vit_with_norms() -> VisionTransformer:
    """A ViT whose attention and MLP have inner LayerNorms over heads and hidden units, and q/k norms."""
    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=48,
        depth=2,
        num_heads=3,
        num_classes=10,
        qk_norm=True,
        scale_attn_norm=True,
        scale_mlp_norm=True,
    )


def _zero_batch_norm_channels(model: nn.Module, norm_names: list[str], channels: list[int]) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name in norm_names:
            modules[name].weight[channels] = 0.0
            modules[name].bias[channels] = 0.0


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _every_other(size: int) -> list[int]:
    return list(range(0, size, 2))


# ---------------------------------------------------------------- groups


def test_resnet20_groups_are_stage_streams_and_block_internal_channels() -> None:
    model = create_model("resnet20")
    groups = prunable_groups(model)
    assert [name for name in groups if "." not in name] == ["layer1", "layer2", "layer3"]
    assert len(groups) == 3 + 9
    assert groups["layer1"].size == 16 and groups["layer3"].size == 64
    stream = {s.tensor_name for s in groups["layer1"].slices}
    assert {"conv1.weight", "bn1.weight", "layer1.2.bn2.running_var", "layer2.0.conv1.weight"} <= stream
    assert "layer2.0.downsample.0.weight" in stream
    last = {(s.tensor_name, s.dim) for s in groups["layer3"].slices}
    assert ("fc.weight", 1) in last and ("layer3.0.downsample.1.weight", 0) in last
    internal_only = prunable_groups(model, include_residual=False)
    assert list(internal_only) == [name for name in groups if "." in name]
    assert {s.tensor_name for s in groups["layer2.1.conv1"].slices} == {
        "layer2.1.conv1.weight",
        "layer2.1.bn1.weight",
        "layer2.1.bn1.bias",
        "layer2.1.bn1.running_mean",
        "layer2.1.bn1.running_var",
        "layer2.1.conv2.weight",
    }


def test_vgg_and_vit_groups() -> None:
    vgg_groups = prunable_groups(create_model("vgg16_bn"))
    assert len(vgg_groups) == 13
    assert {(s.tensor_name, s.dim) for s in vgg_groups["features.40"].slices if s.role == "consumer"} == {
        ("classifier.0.weight", 1)
    }
    vit = _small_vit()
    assert list(prunable_groups(vit)) == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    assert list(head_groups(vit)) == ["blocks.0.attn", "blocks.1.attn"]
    assert mlp_unit_groups(vit)["blocks.1.mlp"].size == 192
    assert head_groups(vit)["blocks.0.attn"].size == 3


def test_unsupported_models_get_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"does not support Sequential.*CifarResNet.*CifarVGG.*VisionTransformer"):
        prunable_groups(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="Bottleneck"):
        prunable_groups(resnet50())
    with pytest.raises(TypeError, match="VisionTransformer"):
        remove_heads_(create_model("resnet20"), {"layer1.0.conv1": [0]})
    with pytest.raises(ValueError, match="not a prunable group.*valid group names: layer1"):
        remove_channels_(create_model("resnet20"), {"layer9": [0]})
    with pytest.raises(ValueError, match="unknown group kind"):
        prunable_groups(_small_vit(), kinds=["filters"])


# ---------------------------------------------------------------- surgery shapes


@pytest.mark.parametrize(("name", "batch"), [("resnet20", 2), ("resnet18", 1), ("vgg16_bn", 2), ("vit_tiny", 1)])
def test_every_group_of_every_builtin_model_shrinks_as_requested(name: str, batch: int) -> None:
    torch.manual_seed(0)
    model = create_model(name).eval()
    groups = prunable_groups(model)
    keep = {group_name: _every_other(group.size) for group_name, group in groups.items()}
    records = shrink_groups_(model, keep)
    assert [record["group"] for record in records] == list(groups)
    modules = dict(model.named_modules())
    for group_name, group in groups.items():
        kept = len(keep[group_name])
        for tensor_slice in group.slices:
            tensor = getattr(modules[tensor_slice.module], tensor_slice.attr)
            assert tensor.shape[tensor_slice.dim] == kept * tensor_slice.width * tensor_slice.chunks
        refreshed = prunable_groups(model)[group_name]
        assert refreshed.size == kept
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert (module.out_channels, module.in_channels) == tuple(module.weight.shape[:2])
        elif isinstance(module, nn.BatchNorm2d):
            assert module.num_features == module.weight.shape[0]
        elif isinstance(module, nn.Linear):
            assert (module.out_features, module.in_features) == tuple(module.weight.shape)
    assert model(torch.randn(batch, 3, 32, 32)).shape == (batch, 10)


def test_vit_head_surgery_updates_every_derived_attribute() -> None:
    model = _small_vit()
    attention = model.blocks[0].attn
    scale = attention.scale
    remove_heads_(model, {"blocks.0.attn": [0, 2]})
    assert attention.num_heads == 2
    assert attention.head_dim == 16
    assert attention.attn_dim == 32
    assert attention.scale == scale
    assert attention.qkv.weight.shape == (96, 48) and attention.qkv.bias.shape == (96,)
    assert attention.qkv.out_features == 96
    assert attention.proj.weight.shape == (48, 32) and attention.proj.in_features == 32
    assert model.blocks[1].attn.num_heads == 3
    remove_mlp_units_(model, {"blocks.1.mlp": list(range(50))})
    assert model.blocks[1].mlp.fc1.out_features == 50 and model.blocks[1].mlp.fc2.in_features == 50
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_keep_lists_are_validated() -> None:
    model = _small_vit()
    with pytest.raises(ValueError, match="empty: at least one of its 3 heads must stay"):
        remove_heads_(model, {"blocks.0.attn": []})
    with pytest.raises(ValueError, match="repeats"):
        remove_heads_(model, {"blocks.0.attn": [1, 1]})
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        remove_heads_(model, {"blocks.0.attn": [0, 3]})
    with pytest.raises(TypeError, match="ints"):
        remove_heads_(model, {"blocks.0.attn": [0.0]})
    with pytest.raises(ValueError, match="not a prunable group"):
        remove_heads_(model, {"blocks.0.mlp": [0]})
    assert model.blocks[0].attn.num_heads == 3
    assert remove_heads_(model, {"blocks.0.attn": torch.tensor([2, 0, 1])}) == []


# ---------------------------------------------------------------- exactness


def test_removing_vgg_channels_with_zero_batch_norm_leaves_outputs_unchanged() -> None:
    torch.manual_seed(0)
    model = _small_vgg()
    randomize_batch_norms(model)
    model.eval()
    groups = prunable_groups(model)
    removed = {"features.0": [1, 5], "features.4": [0, 3, 15], "features.8": [7], "features.12": [0, 100, 511]}
    for group_name, channels in removed.items():
        _zero_batch_norm_channels(model, [f"features.{int(group_name.split('.')[1]) + 1}"], channels)
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    keep = {name: [i for i in range(groups[name].size) if i not in channels] for name, channels in removed.items()}
    remove_channels_(model, keep)
    assert model.classifier[0].in_features == 509
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


def test_removing_resnet_channels_with_zero_batch_norm_leaves_outputs_unchanged() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    randomize_batch_norms(model)
    model.eval()
    groups = prunable_groups(model)
    internal = {"layer1.1.conv1": [0, 9], "layer3.2.conv1": [4, 5, 63]}
    for group_name, channels in internal.items():
        _zero_batch_norm_channels(model, [group_name.replace("conv1", "bn1")], channels)
    streams = {"layer1": [2, 15], "layer2": [0, 31], "layer3": [10]}
    for group_name, channels in streams.items():
        norms = [s.module for s in groups[group_name].slices if s.role == "norm" and s.attr == "weight"]
        assert len(norms) == 4
        _zero_batch_norm_channels(model, norms, channels)
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    keep = {
        name: [i for i in range(groups[name].size) if i not in channels]
        for name, channels in {**internal, **streams}.items()
    }
    remove_channels_(model, keep)
    assert model.fc.in_features == 63 and model.conv1.out_channels == 14
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fused", [True, False])
def test_removing_heads_and_mlp_units_whose_outputs_are_zero_leaves_outputs_unchanged(fused: bool) -> None:
    torch.manual_seed(0)
    model = _small_vit().eval()
    for block in model.blocks:
        block.attn.fused_attn = fused
    head_dim = model.blocks[0].attn.head_dim
    with torch.no_grad():
        model.blocks[0].attn.proj.weight[:, head_dim : 2 * head_dim] = 0.0
        model.blocks[1].attn.proj.weight[:, 0:head_dim] = 0.0
        model.blocks[1].attn.proj.weight[:, 2 * head_dim :] = 0.0
        model.blocks[0].mlp.fc2.weight[:, 10:150] = 0.0
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    remove_heads_(model, {"blocks.0.attn": [0, 2], "blocks.1.attn": [1]})
    remove_mlp_units_(model, {"blocks.0.mlp": list(range(10)) + list(range(150, 192))})
    assert [block.attn.num_heads for block in model.blocks] == [2, 1]
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- history and replay


@pytest.mark.parametrize(
    ("builder", "include_residual"),
    [
        (lambda: create_model("resnet20"), True),
        (lambda: create_model("resnet20"), False),
        (lambda: create_model("resnet18"), True),
        (_small_vgg, True),
        (_small_vit, True),
        (_vit_with_norms, True),
    ],
)
def test_replayed_history_loads_the_shrunken_state_dict_strictly(
    builder: Callable[[], nn.Module], include_residual: bool
) -> None:
    torch.manual_seed(0)
    model = builder().eval()
    groups = prunable_groups(model, include_residual=include_residual)
    scores = structured_importance(model, groups, "l2")
    history: list[dict] = []
    shrink_groups_(model, select_channels(scores, 0.3, normalize=True), history)
    second = prunable_groups(model, include_residual=include_residual)
    first_name = next(iter(second))
    shrink_groups_(model, {first_name: list(range(1, second[first_name].size))}, history)
    assert history and all(set(record) == {"op", "group", "size", "keep"} for record in history)

    saved = json.loads(json.dumps(history))
    fresh = builder().eval()
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(model.state_dict(), strict=True)
    replay_history(fresh, saved)
    fresh.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(fresh(x), model(x), atol=0, rtol=0)
    with pytest.raises(ValueError, match="already applied"):
        replay_history(fresh, saved)


def test_history_records_are_validated() -> None:
    model = create_model("resnet20")
    with pytest.raises(ValueError, match="lacks"):
        replay_history(model, [{"op": "remove_channels", "group": "layer1"}])
    with pytest.raises(ValueError, match="unknown op"):
        check_history([{"op": "remove_everything", "group": "layer1", "size": 16, "keep": [0]}])
    with pytest.raises(ValueError, match="whose units are channels"):
        replay_history(model, [{"op": "remove_heads", "group": "layer1", "size": 16, "keep": [0]}])
    with pytest.raises(ValueError, match="does not have"):
        replay_history(model, [{"op": "remove_channels", "group": "blocks.0.attn", "size": 3, "keep": [0]}])
    with pytest.raises(TypeError, match="list of records"):
        replay_history(model, "layer1")


def test_unstructured_mask_survives_surgery() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    params = prunable_parameters(model)
    mask = PruningMask({name: torch.rand(p.shape) > 0.5 for name, p in params.items()})
    with torch.no_grad():
        for parameter in params.values():
            parameter.copy_(torch.randn_like(parameter) + 10.0)
    mask.apply_(model)
    history = remove_channels_(
        model, {"layer2": _every_other(32), "layer1.0.conv1": [3, 4, 5], "layer3.1.conv1": list(range(40))}
    )
    remapped = remap_mask(mask, create_model("resnet20"), history)
    remapped.validate(model)
    shrunken = dict(model.named_parameters())
    for name in remapped:
        assert torch.equal(remapped[name], shrunken[name] != 0), name
    assert remapped["layer1.0.conv1.weight"].shape == (3, 16, 3, 3)
    assert remapped["fc.weight"].shape == mask["fc.weight"].shape


# ---------------------------------------------------------------- importance


def test_norm_and_batch_norm_importance() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20")
    randomize_batch_norms(model)
    groups = prunable_groups(model)
    l1 = structured_importance(model, groups, "l1")
    l2 = structured_importance(model, groups, "l2")
    conv = model.layer1[0].conv1.weight
    torch.testing.assert_close(l1["layer1.0.conv1"], conv.abs().sum((1, 2, 3)))
    torch.testing.assert_close(l2["layer1.0.conv1"], conv.pow(2).sum((1, 2, 3)).sqrt())
    stream_convs = [model.conv1.weight] + [block.conv2.weight for block in model.layer1]
    torch.testing.assert_close(l1["layer1"], sum(w.abs().sum((1, 2, 3)) for w in stream_convs))
    bn_scale = structured_importance(model, groups, "bn_scale")
    norms = [model.layer2[0].downsample[1]] + [block.bn2 for block in model.layer2]
    torch.testing.assert_close(bn_scale["layer2"], sum(norm.weight.abs() for norm in norms))
    torch.testing.assert_close(bn_scale["layer2.2.conv1"], model.layer2[2].bn1.weight.abs())
    vit = _small_vit()
    vit_l1 = structured_importance(vit, head_groups(vit), "l1")
    qkv = vit.blocks[0].attn.qkv.weight.reshape(3, 3, 16, 48)
    torch.testing.assert_close(vit_l1["blocks.0.attn"], qkv.abs().sum((0, 2, 3)))
    with pytest.raises(ValueError, match="bn_scale.*batch norm"):
        structured_importance(vit, head_groups(vit), "bn_scale")
    with pytest.raises(ValueError, match="unknown score 'entropy'"):
        structured_importance(model, groups, "entropy")


def test_taylor_importance_uses_accumulated_gradients() -> None:
    torch.manual_seed(0)
    model = _small_vgg()
    groups = prunable_groups(model)
    with pytest.raises(ValueError, match="needs gradients accumulated in .grad"):
        taylor_from_gradients(model, groups)
    for _ in range(2):
        model(torch.randn(4, 3, 32, 32)).logsumexp(1).sum().backward()
    taylor = taylor_from_gradients(model, groups)
    conv, norm = model.features[4], model.features[5]
    expected = (conv.weight.grad * conv.weight).sum((1, 2, 3)) + conv.bias.grad * conv.bias
    expected = expected.abs() + (norm.weight.grad * norm.weight + norm.bias.grad * norm.bias).abs()
    torch.testing.assert_close(taylor["features.4"], expected.detach())
    vit = _small_vit()
    vit(torch.randn(2, 3, 32, 32)).sum().backward()
    fc1 = vit.blocks[1].mlp.fc1
    torch.testing.assert_close(
        taylor_from_gradients(vit, mlp_unit_groups(vit))["blocks.1.mlp"],
        ((fc1.weight.grad * fc1.weight).sum(1) + fc1.bias.grad * fc1.bias).abs().detach(),
    )


def test_surgery_slices_accumulated_gradients_and_training_continues() -> None:
    torch.manual_seed(0)
    model = _small_vgg()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    old_grad = model.features[0].weight.grad.clone()
    remove_channels_(model, {"features.0": [1, 3]})
    torch.testing.assert_close(model.features[0].weight.grad, old_grad[[1, 3]])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.zero_grad()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert model.features[4].weight.grad.shape == (16, 2, 3, 3)


# ---------------------------------------------------------------- selection


def test_global_selection_removes_lowest_scores_with_cap_and_keep_one() -> None:
    scores = {"a": torch.tensor([0.1, 5.0, 0.2, 6.0]), "b": torch.tensor([0.05, 0.06]), "c": torch.tensor([9.0, 8.0])}
    assert select_channels(scores, 0.375) == {"a": [1, 3], "b": [1], "c": [0, 1]}
    assert select_channels(scores, 0.5) == {"a": [3], "b": [1], "c": [0, 1]}
    assert select_channels(scores, 0.5, max_group_fraction=0.5) == {"a": [1, 3], "b": [1], "c": [0]}
    with pytest.raises(ValueError, match="at most 4 may go"):
        select_channels(scores, 0.625, max_group_fraction=0.5)
    assert select_channels(scores, 0.0) == {"a": [0, 1, 2, 3], "b": [0, 1], "c": [0, 1]}
    assert select_channels(scores, 0.5, scope="layer") == {"a": [1, 3], "b": [1], "c": [0]}


def test_global_selection_can_normalize_each_group_by_its_mean() -> None:
    scores = {"big": torch.tensor([100.0, 300.0]), "small": torch.tensor([1.0, 0.8])}
    assert select_channels(scores, 0.25) == {"big": [0, 1], "small": [0]}
    assert select_channels(scores, 0.25, normalize=True) == {"big": [1], "small": [0, 1]}


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_channel_fraction_out_of_range_is_rejected(bad: float) -> None:
    scores = {"a": torch.ones(4)}
    with pytest.raises(ValueError, match=r"channel_fraction must be a number in \[0, 1\)"):
        select_channels(scores, bad)
    model = create_model("resnet20")
    groups = prunable_groups(model)
    with pytest.raises(ValueError, match=r"removed_fraction must be a number in \(0, 1\)"):
        select_channels_for_removed_fraction(model, groups, structured_importance(model, groups), bad)


def test_selection_arguments_are_validated() -> None:
    scores = {"a": torch.ones(4)}
    with pytest.raises(ValueError, match=r"max_group_fraction must be in \(0, 1\]"):
        select_channels(scores, 0.5, max_group_fraction=0.0)
    with pytest.raises(ValueError, match="scope must be one of"):
        select_channels(scores, 0.5, scope="network")
    with pytest.raises(ValueError, match="exceeds max_group_fraction"):
        select_channels(scores, 0.95, scope="layer")
    with pytest.raises(ValueError, match="NaN"):
        select_channels({"a": torch.tensor([float("nan"), 1.0])}, 0.5)
    with pytest.raises(TypeError, match="1-D tensor"):
        select_channels({"a": [1.0, 2.0]}, 0.5)


@pytest.mark.parametrize(
    ("builder", "kwargs"),
    [
        (lambda: create_model("resnet20"), {"scope": "global"}),
        (lambda: create_model("resnet20"), {"scope": "layer"}),
        (_small_vgg, {"scope": "global", "normalize": True}),
        (_small_vit, {"scope": "global", "normalize": True}),
        (_small_vit, {"scope": "layer"}),
    ],
)
def test_parameter_fraction_target_is_reached_and_not_overshot(builder: Callable[[], nn.Module], kwargs: dict) -> None:
    torch.manual_seed(0)
    model = builder()
    groups = prunable_groups(model)
    scores = structured_importance(model, groups, "l1")
    before = _parameter_count(model)
    keep = select_channels_for_removed_fraction(model, groups, scores, 0.25, **kwargs)
    predicted = removed_parameter_fraction(model, groups, keep)
    one_unit_each = [
        removed_parameter_fraction(model, groups, {name: list(range(1, group.size))}) for name, group in groups.items()
    ]
    largest_step = max(one_unit_each) if kwargs["scope"] == "global" else sum(one_unit_each)
    shrink_groups_(model, keep)
    achieved = 1.0 - _parameter_count(model) / before
    assert achieved == pytest.approx(predicted, abs=1e-12)
    assert 0.25 <= achieved < 0.25 + largest_step
    assert all(len(indices) >= 1 for indices in keep.values())
    assert all(len(keep[name]) >= groups[name].size - int(0.9 * groups[name].size) for name in keep)


def test_unreachable_parameter_fraction_reports_the_reachable_one() -> None:
    model = create_model("resnet20")
    groups = prunable_groups(model, include_residual=False)
    scores = structured_importance(model, {"layer1.0.conv1": groups["layer1.0.conv1"]})
    with pytest.raises(ValueError, match=r"cannot remove 25.0% .* at most 1.\d%"):
        select_channels_for_removed_fraction(model, groups, scores, 0.25)
