"""Removing attention heads and MLP hidden units from a timm Vision Transformer.

Head pruning follows Michel et al., 2019, "Are Sixteen Heads Really Better than One?"
(NeurIPS) and Voita et al., 2019 (ACL); MLP hidden units are pruned as neurons of the
two-layer feed-forward network, as in Chen et al., 2021, "Chasing Sparsity in Vision
Transformers" (NeurIPS) and Yu et al., 2022, "Width & Depth Pruning for Vision Transformers".

Removing head ``h`` of a timm ``Attention`` deletes its q, k and v rows of ``qkv`` (weight and
bias), its rows of the optional ``gate`` and entries of the optional scale norm, and its
``head_dim`` input columns of ``proj``; ``num_heads`` and ``attn_dim`` are set to the new
values. ``head_dim`` and therefore ``scale = head_dim ** -0.5`` stay as they are, and the
forward pass reshapes with the updated ``num_heads``, so both the fused
(``F.scaled_dot_product_attention``) and the explicit attention paths run on the pruned module.
Removing hidden unit ``u`` of an ``Mlp`` deletes row ``u`` of ``fc1`` (and its bias entry), the
hidden norm's entry if any, and column ``u`` of ``fc2``. At least one head per block is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from lit_prune.pruning.channel_groups import StructuredGroup, prunable_groups
from lit_prune.pruning.channel_surgery import shrink_groups_

__all__ = ["head_groups", "mlp_unit_groups", "remove_heads_", "remove_mlp_units_"]


def head_groups(model: nn.Module) -> dict[str, StructuredGroup]:
    """Lists the attention-head groups of a ViT, one per block (``blocks.0.attn`` ...).

    Args:
        model: A timm ``VisionTransformer`` with ``Attention`` and ``Mlp`` blocks.

    Returns:
        Group name to group; a group's units are the heads of that block.

    Raises:
        TypeError: If ``model`` is not a timm ``VisionTransformer``.
        ValueError: If its blocks use another attention or MLP type.
    """
    _require_vit(model)
    return prunable_groups(model, kinds=("heads",))


def mlp_unit_groups(model: nn.Module) -> dict[str, StructuredGroup]:
    """Lists the MLP hidden-unit groups of a ViT, one per block (``blocks.0.mlp`` ...).

    Args:
        model: A timm ``VisionTransformer`` with ``Attention`` and ``Mlp`` blocks.

    Returns:
        Group name to group; a group's units are the hidden units of that block's MLP.

    Raises:
        TypeError: If ``model`` is not a timm ``VisionTransformer``.
        ValueError: If its blocks use another attention or MLP type.
    """
    _require_vit(model)
    return prunable_groups(model, kinds=("mlp_units",))


def remove_heads_(
    model: nn.Module,
    keep: Mapping[str, Sequence[int] | Tensor],
    history: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Removes attention heads from a ViT, in place.

    Args:
        model: A timm ``VisionTransformer``.
        keep: Head-group name (``blocks.3.attn``) to the indices of the heads to keep; at
            least one per block.
        history: A list to append the surgery records to; ``None`` to only return them.

    Returns:
        The records (``op="remove_heads"``) of the blocks that changed.

    Raises:
        TypeError: If ``model`` is not a timm ``VisionTransformer`` or an argument has the
            wrong type.
        ValueError: If a name is not a head group, or a keep list is empty, repeats an index
            or exceeds the number of heads.
    """
    _require_vit(model)
    return shrink_groups_(model, keep, history, kinds=("heads",))


def remove_mlp_units_(
    model: nn.Module,
    keep: Mapping[str, Sequence[int] | Tensor],
    history: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Removes hidden units of the transformer MLPs of a ViT, in place.

    Args:
        model: A timm ``VisionTransformer``.
        keep: MLP-group name (``blocks.3.mlp``) to the indices of the hidden units to keep;
            at least one per block.
        history: A list to append the surgery records to; ``None`` to only return them.

    Returns:
        The records (``op="remove_mlp_units"``) of the blocks that changed.

    Raises:
        TypeError: If ``model`` is not a timm ``VisionTransformer`` or an argument has the
            wrong type.
        ValueError: If a name is not an MLP group, or a keep list is invalid.
    """
    _require_vit(model)
    return shrink_groups_(model, keep, history, kinds=("mlp_units",))


def _require_vit(model: nn.Module) -> None:
    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"head and MLP-unit surgery needs a timm VisionTransformer (e.g. vit_tiny), got "
            f"{type(model).__name__}; prune CNN channels with remove_channels_"
        )
