"""``ChannelPruning`` (CNNs) and ``HeadPruning`` (Vision Transformers): physical structured pruning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from typing_extensions import override

from callbacks.structured_pruning import ParameterFractionPruning
from lit_prune.pruning.channel_groups import StructuredGroup
from lit_prune.pruning.score_registry import get_score, list_scores

__all__ = ["ALLOCATIONS", "ChannelPruning", "HeadPruning"]

_HEAD_KINDS = ("heads", "mlp_units")

ALLOCATIONS = ("per_kind", "joint")
"""How ``HeadPruning`` splits the target between heads and MLP units."""


class ChannelPruning(ParameterFractionPruning):
    """Removes convolution channels of a CNN until a fraction of its parameters is gone.

    Channels are cut out of the convolution, its batch norm and every consumer (Li et al. 2017,
    "Pruning Filters for Efficient ConvNets"); in a ResNet the channels added together by the
    residual connections of a stage form one group and go together (``include_residual: true``),
    or only block-internal channels are pruned (``false``). Supported: CIFAR ResNet-20/32/56,
    ResNet-18, VGG16-BN. The network really shrinks: the checkpoint stores the surgery history,
    so ``test --ckpt_path``, resume and ``load_from_checkpoint`` rebuild the small model.

    With ``score: bn_scale`` after training under ``NetworkSlimming`` this is network
    slimming (Liu et al. 2017; set ``normalize: false`` for its single global threshold). The
    default ``normalize: true`` ranks each layer's channels relative to the layer's mean score,
    because raw L1 norms grow with a layer's fan-in and would empty the first layers first.

    Args:
        removed_fraction: Fraction of the model's parameters to remove, in (0, 1).
        **kwargs: Options of ``ParameterFractionPruning`` (score: ``l1``, ``l2``, ``bn_scale``,
            ``taylor``, ``fpgm`` or an import path; scope, normalize, max_group_fraction,
            include_residual, prune_epoch or fine_tune_epochs, calibration_batches,
            restart_lr_schedule, eval_batches).

    Raises:
        ValueError: If an option is out of range (checked here), or, when ``fit`` starts, the
            network has no channel groups (a ViT: use ``HeadPruning``), the target cannot be
            reached within ``max_group_fraction``, or the pruning epoch is past ``max_epochs``.
        TypeError: If an option has the wrong type, or the network is not supported.
    """

    def __init__(self, removed_fraction: float, **kwargs: Any) -> None:
        super().__init__(removed_fraction=removed_fraction, kinds=("channels",), **kwargs)


class HeadPruning(ParameterFractionPruning):
    """Removes attention heads and MLP hidden units of a timm Vision Transformer.

    Heads lose their q/k/v rows, ``proj`` columns and every derived attribute (Michel et al.
    2019, "Are Sixteen Heads Really Better than One?"); MLP units lose their ``fc1`` row and
    ``fc2`` column (Chen et al. 2021, "Chasing Sparsity in Vision Transformers").

    Heads and MLP units are not comparable on raw scores: a head's L1 norm sums ``3 * head_dim``
    rows of ``qkv`` (192 rows of 192 weights in ViT-Tiny) while a unit's sums one row of ``fc1``,
    so one raw ranking would take only MLP units; and normalising each group by its mean does not
    make them comparable either, because a head's score averages so many weights that the heads
    of a block barely differ relative to each other, while MLP units spread widely (at
    initialisation a normalised joint ranking removes no head at all). The default
    ``allocation: per_kind`` therefore splits the target: heads and MLP units each lose the same
    fraction of *their own* parameters (``removed_fraction`` of the model overall), each kind
    ranked on its own across all blocks. ``allocation: joint`` ranks both kinds together in one
    ordering (use it with ``normalize: true``). ``scope: layer`` removes the same fraction of
    units from every group; ``kinds: [heads]`` or ``[mlp_units]`` prunes one kind only.

    Args:
        removed_fraction: Fraction of the model's parameters to remove, in (0, 1).
        kinds: Unit kinds to prune, drawn from ``heads`` and ``mlp_units``.
        allocation: ``per_kind`` (each kind loses the same fraction of its parameters) or
            ``joint`` (one ranking over both kinds).
        score: ``l1``, ``l2``, ``taylor``, ``fpgm`` or an import path (a ViT has no batch norm,
            so scores that need one, ``bn_scale``, are refused).
        **kwargs: Options of ``ParameterFractionPruning`` (scope, normalize, max_group_fraction:
            of one block's heads or units, every block keeps at least one; prune_epoch or
            fine_tune_epochs, calibration_batches, restart_lr_schedule, eval_batches).

    Raises:
        ValueError: If an option is out of range or a kind unknown (checked here), or, when
            ``fit`` starts, the network has no heads (a CNN: use ``ChannelPruning``), the
            target cannot be reached, or the pruning epoch is past ``max_epochs``.
        TypeError: If an option has the wrong type, or the network is not supported.
    """

    def __init__(
        self,
        removed_fraction: float,
        kinds: Sequence[str] = _HEAD_KINDS,
        allocation: str = "per_kind",
        score: str = "l1",
        **kwargs: Any,
    ) -> None:
        if isinstance(kinds, str) or not kinds or any(kind not in _HEAD_KINDS for kind in kinds):
            raise ValueError(f"kinds must be a non-empty list drawn from {list(_HEAD_KINDS)}, got {kinds!r}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {list(ALLOCATIONS)}, got {allocation!r}")
        if "batch_norm" in get_score(score, kind="groups").needs:
            usable = [name for name in list_scores("groups") if "batch_norm" not in get_score(name).needs]
            raise ValueError(
                f"score {score!r} needs batch norms, which a Vision Transformer does not have; "
                f"use one of {', '.join(map(repr, usable))}"
            )
        super().__init__(
            removed_fraction=removed_fraction, kinds=tuple(kinds), score=score, include_residual=True, **kwargs
        )
        self.allocation = allocation

    @override
    def select(
        self,
        network: nn.Module,
        groups: Mapping[str, StructuredGroup],
        scores: Mapping[str, Tensor],
        removed_fraction: float,
    ) -> dict[str, list[int]]:
        """Keeps units per ``allocation``: with ``per_kind`` each kind reaches its share of the target.

        A kind's share is ``removed_fraction`` times the fraction of the prunable parameters that
        its groups hold (heads and MLP units touch disjoint tensors), so both kinds lose the same
        fraction of their own parameters and together ``removed_fraction`` of the model.
        """
        kinds = sorted({group.kind for group in groups.values()})
        if self.allocation == "joint" or len(kinds) == 1:
            return super().select(network, groups, scores, removed_fraction)
        by_kind = {kind: {name: group for name, group in groups.items() if group.kind == kind} for kind in kinds}
        sizes = {kind: _parameters_touched(network, kind_groups) for kind, kind_groups in by_kind.items()}
        keep: dict[str, list[int]] = {}
        for kind, kind_groups in by_kind.items():
            share = removed_fraction * sizes[kind] / sum(sizes.values())
            kind_scores = {name: scores[name] for name in kind_groups}
            keep.update(super().select(network, kind_groups, kind_scores, share))
        return keep


def _parameters_touched(network: nn.Module, groups: Mapping[str, StructuredGroup]) -> int:
    """Number of parameters in the tensors that ``groups`` slice."""
    parameters = dict(network.named_parameters())
    names = {tensor_slice.tensor_name for group in groups.values() for tensor_slice in group.slices}
    return sum(parameters[name].numel() for name in names if name in parameters)
