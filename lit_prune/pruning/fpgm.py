"""FPGM: filters near the geometric median of their layer are the redundant ones.

He, Liu, Wang, Hu & Yang, 2019, "Filter Pruning via Geometric Median for Deep Convolutional
Neural Networks Acceleration" (CVPR). A filter close to the geometric median of its layer's
filters can be represented by the others, so it is the one to remove, whatever its norm. As
in the authors' code (he-y/filter-pruning-geometric-median, ``get_filter_similar``), the
median is approximated by the filter with the smallest sum of Euclidean distances to all
filters of the layer, and each filter scores that sum:

    score(i) = Σ_j ||F_i - F_j||₂,

higher = farther from the median = more important. A unit of a coupled group (a ResNet
residual stream, written by several convolutions) scores the sum of its per-layer scores, the
same rule the norm scores follow (the paper prunes single layers). The paper prunes the same
fraction of every layer (``scope: layer``); with ``scope: global`` the default
``normalize: true`` of ``ChannelPruning`` ranks each group's scores relative to its mean.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from lit_prune.pruning.channel_groups import StructuredGroup
from lit_prune.pruning.group_scores import check_groups, producer_weight_rows
from lit_prune.pruning.score_registry import register_score

__all__ = ["fpgm_importance"]


@register_score("fpgm", kind="groups", label="FPGM")
def fpgm_importance(model: nn.Module, groups: Mapping[str, StructuredGroup]) -> dict[str, Tensor]:
    """Scores every unit by its summed distance to the other units of its layer (FPGM).

    Args:
        model: The network the groups were built from, at its current widths.
        groups: Group name to group, e.g. from
            :func:`~lit_prune.pruning.channel_groups.prunable_groups`.

    Returns:
        Group name to a 1-D float32 tensor of ``group.size`` scores, detached (distances are
        computed in float64).

    Raises:
        TypeError: If ``groups`` is not a mapping of groups.
        ValueError: If a group no longer matches the model's widths or has no producing weights.
    """
    check_groups(groups)
    scores: dict[str, Tensor] = {}
    for name, group in groups.items():
        rows = producer_weight_rows(model, group)
        if not rows:
            raise ValueError(f"group {group.name!r} has no producing weights to score with 'fpgm'")
        total = sum(torch.cdist(layer.double(), layer.double()).sum(1) for layer in rows)
        scores[name] = total.float()
    return scores
