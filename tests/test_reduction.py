"""The parameter-reduction vocabulary against hand-computed values, one pruning method of each kind.

The expected numbers are written out from the layer shapes (docs/architecture.md, "Parameter
reduction"). MACs follow torchprofile's counting, which ``count_macs`` uses: a convolution costs
``output positions * weight.numel()``, a linear layer ``rows * weight.numel()``, a batch norm one MAC
per output element, attention products ``tokens² * head_dim`` each; max pooling, ReLU and residual
additions cost nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import nn

from lit_prune.models import CifarVGG, create_model
from lit_prune.pruning import PruningMask
from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.regression_pruning import regression_channel_prune_
from lit_prune.report import accuracy_section, build_report, measure_profile
from lit_prune.report.markdown import render_markdown
from lit_prune.report.reduction import reduction_section, stage_reduction

RESNET20_PARAMS = 272_474
RESNET20_MACS = 41_013_952
# Conv/linear MACs of ResNet-20 at 32 px: stem 1024·432, layer1 6·1024·2304, layer2 256·(4608 + 5·9216 + 512),
# layer3 64·(18432 + 5·36864 + 2048), fc 640; the rest (200,768) is batch norm and pooling.
RESNET20_CONV_LINEAR_MACS = (
    1024 * 432 + 6 * 1024 * 2304 + 256 * (4608 + 5 * 9216 + 512) + 64 * (18432 + 5 * 36864 + 2048) + 640
)
RESNET20_CONV_LINEAR_WEIGHTS = 432 + 6 * 2304 + 4608 + 5 * 9216 + 512 + 18432 + 5 * 36864 + 2048 + 640


def _measure(network: nn.Module, reference: nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
    profile = measure_profile(network, inputs, warmup=0, repeats=1, energy_repeats=1)
    return reduction_section(
        network, reference, inputs, profile, reference_description="test reference", latency_warmup=0, latency_repeats=1
    )


def _inputs() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_hand_computed_totals_match_resnet20() -> None:
    assert RESNET20_CONV_LINEAR_WEIGHTS == 270_896
    assert RESNET20_CONV_LINEAR_MACS == 40_813_184
    reduction = _measure(create_model("resnet20"), create_model("resnet20"), _inputs())
    assert reduction["params_unpruned"] == RESNET20_PARAMS and reduction["macs_unpruned"] == RESNET20_MACS
    # A fresh network's 784 batch-norm shifts start at exactly zero, and zero is what "zeroed" counts.
    assert reduction["removed_fraction"] == 0.0
    assert reduction["params_nonzero"] == RESNET20_PARAMS - 784
    assert reduction["overall_reduction"] == pytest.approx(784 / RESNET20_PARAMS)


def test_unstructured_half_of_every_weight_zeroed() -> None:
    torch.manual_seed(0)
    network = create_model("resnet20")
    keep = {}
    for name, module in network.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            count = module.weight.numel()
            keep[f"{name}.weight"] = (torch.arange(count) >= count // 2).reshape(module.weight.shape)
    PruningMask(keep).apply_(network)
    reduction = _measure(network, create_model("resnet20"), _inputs())
    zeroed = RESNET20_CONV_LINEAR_WEIGHTS // 2 + 784  # half of every weight, and the BN shifts that start at zero
    assert reduction["params_unpruned"] == reduction["params_total"] == RESNET20_PARAMS
    assert reduction["params_nonzero"] == RESNET20_PARAMS - zeroed == 136_242
    assert reduction["removed_fraction"] == 0.0
    assert reduction["zeroed_fraction"] == pytest.approx(136_232 / 272_474)
    assert reduction["overall_reduction"] == pytest.approx(136_232 / 272_474)
    assert reduction["compression_ratio"] == pytest.approx(272_474 / 136_242)
    assert reduction["macs"] == RESNET20_MACS and reduction["macs_unpruned"] == RESNET20_MACS
    nonzero_macs = RESNET20_MACS - RESNET20_CONV_LINEAR_MACS // 2
    assert reduction["nonzero_macs"] == nonzero_macs == 20_607_360
    assert reduction["theoretical_speedup"] == pytest.approx(RESNET20_MACS / 20_607_360)
    assert reduction["dense_kernel_speedup"] == pytest.approx(1.0)
    assert reduction["sparse_size_mb"] < reduction["size_mb"] == pytest.approx(reduction["size_unpruned_mb"])
    assert reduction["measured_speedup"] == pytest.approx(reduction["reference_latency_ms"] / reduction["latency_ms"])


def test_channel_pruned_resnet20_block() -> None:
    network = create_model("resnet20")
    shrink_groups_(network, {"layer1.0.conv1": list(range(8))})
    reduction = _measure(network, create_model("resnet20"), _inputs())
    # 8 filters of layer1.0.conv1 (8·16·9), their BN scale and shift (2·8), 8 input channels of conv2 (16·8·9).
    removed = 8 * 16 * 9 + 2 * 8 + 16 * 8 * 9
    assert removed == 2_320
    assert reduction["params_total"] == RESNET20_PARAMS - removed
    assert reduction["removed_fraction"] == pytest.approx(2_320 / 272_474)
    assert reduction["overall_reduction"] == pytest.approx(reduction["removed_fraction"] + reduction["zeroed_fraction"])
    # at 32x32: conv1 1024·8·144, bn1 1024·8, conv2 1024·16·72.
    removed_macs = 1024 * 8 * 144 + 1024 * 8 + 1024 * 16 * 72
    assert reduction["macs"] == RESNET20_MACS - removed_macs == 38_646_464
    assert reduction["dense_kernel_speedup"] == pytest.approx(RESNET20_MACS / 38_646_464)
    assert reduction["size_mb"] < reduction["size_unpruned_mb"]


def test_head_pruned_vit_tiny() -> None:
    network = create_model("vit_tiny")
    shrink_groups_(network, {"blocks.0.attn": [0, 1]})
    assert network.blocks[0].attn.num_heads == 2
    reference = create_model("vit_tiny")
    reduction = _measure(network, reference, _inputs())
    # One 64-dim head of 192: qkv loses 3·64 rows of 192 weights and their biases, proj 64 input columns.
    removed = 3 * 64 * 192 + 3 * 64 + 192 * 64
    assert removed == 49_344
    assert reduction["params_unpruned"] == 5_362_762
    assert reduction["params_total"] == 5_362_762 - removed
    assert reduction["removed_fraction"] == pytest.approx(49_344 / 5_362_762)
    # 65 tokens (64 patches and the class token): qkv and proj lose 65·(36,864 + 12,288) MACs, the two attention
    # products 2·65·65·64.
    removed_macs = 65 * (3 * 64 * 192 + 192 * 64) + 2 * 65 * 65 * 64
    assert reduction["macs_unpruned"] - reduction["macs"] == removed_macs == 3_735_680


def test_regression_pruned_vgg() -> None:
    torch.manual_seed(0)
    config = (8, "M", 16, "M", 512)
    network = CifarVGG(config, num_classes=10)
    batches = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))]
    result = regression_channel_prune_(
        network, copy.deepcopy(network), batches, {"features.4": 0.5, "features.8": 0.0}, positions_per_image=4
    )
    assert len(result.keep["features.0"]) == 4
    reduction = _measure(network, CifarVGG(config, num_classes=10), _inputs())
    # 4 of the 8 filters of features.0 (4·27 weights + 4 biases), their BN (2·4), 4 input channels of
    # features.4 (16·4·9).
    removed = 4 * 27 + 4 + 2 * 4 + 16 * 4 * 9
    assert removed == 696
    convolutions = (8 * 27 + 8) + 16 + (16 * 8 * 9 + 16) + 32 + (512 * 16 * 9 + 512) + 1024
    unpruned = convolutions + 2 * (512 * 512 + 512) + 512 * 10 + 10
    assert reduction["params_unpruned"] == unpruned == 607_146
    assert reduction["params_total"] == unpruned - removed
    assert reduction["removed_fraction"] == pytest.approx(696 / 607_146)
    assert result.removed_parameter_fraction == pytest.approx(696 / 607_146)
    # features.0 at 32x32: 1024·4·27, its BN 1024·4; features.4 at 16x16: 256·16·4·9.
    assert reduction["macs_unpruned"] - reduction["macs"] == 1024 * 4 * 27 + 1024 * 4 + 256 * 16 * 36 == 262_144


def test_without_a_reference_every_figure_against_it_is_null_with_a_note() -> None:
    network = create_model("resnet20")
    profile = measure_profile(network, _inputs(), warmup=0, repeats=1, energy_repeats=1)
    reduction = reduction_section(
        network, None, _inputs(), profile, reference_description="", reference_note="given as a module"
    )
    for key in ("params_unpruned", "removed_fraction", "overall_reduction", "theoretical_speedup", "measured_speedup"):
        assert reduction[key] is None and reduction["notes"][key], key
    assert reduction["notes"]["params_unpruned"] == "given as a module"
    assert reduction["params_total"] == RESNET20_PARAMS and reduction["zeroed_fraction"] is None


def test_stage_reduction_combines_removed_and_zeroed() -> None:
    assert stage_reduction({"sparsity": 0.5}, 1000, 800, surgery=False) == pytest.approx(0.4)
    assert stage_reduction({"sparsity": 0.0, "params": 750}, 1000, 0, surgery=True) == pytest.approx(0.25)
    assert stage_reduction({"sparsity": 0.0}, 1000, 0, surgery=True) is None
    assert stage_reduction({"sparsity": 0.5}, None, 800, surgery=False) is None


def test_report_of_a_channel_pruned_run_says_what_was_removed() -> None:
    network = create_model("resnet20")
    shrink_groups_(network, {"layer1.0.conv1": list(range(8))})
    inputs = _inputs()
    profile = measure_profile(network, inputs, warmup=0, repeats=1, energy_repeats=1)
    reduction = reduction_section(
        network, create_model("resnet20"), inputs, profile, reference_description="resnet20", latency_repeats=1
    )
    stages = [
        {"name": "baseline", "sparsity": 0.0, "params": RESNET20_PARAMS},
        {"name": "pruned", "sparsity": 0.0, "params": 270_154},
    ]
    report = build_report(
        model="resnet20", dataset="digits", method="channels", network=network, mask=None,
        accuracy=accuracy_section({"top1": 0.5, "top5": 0.9}, {"top1": 0.6, "top5": 0.95}), profile=profile,
        stages=stages, reduction=reduction, surgery=True,
    )  # fmt: skip
    assert report["sparsity"]["global"] == 0.0, "no weight is masked: sparsity alone would say nothing was pruned"
    assert report["params"] == {"total": 270_154, "nonzero": 270_154 - (784 - 8), "unpruned": RESNET20_PARAMS}
    assert [stage["overall_reduction"] for stage in report["stages"]] == [0.0, pytest.approx(2_320 / 272_474)]
    markdown = render_markdown(report)
    assert "| removed physically (structured) | 0.85 % |" in markdown
    assert "| zeroed (unstructured) | 0.28 % |" in markdown, "the BN shifts of a fresh network are exactly zero"
    assert "| overall parameter reduction | 1.14 % |" in markdown
    assert "| train | 60.00 % | 95.00 % |" in markdown
