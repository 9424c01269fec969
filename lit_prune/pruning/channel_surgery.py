"""Physical removal of structured units: the network really gets smaller.

Structured pruning as in Li et al., 2017, "Pruning Filters for Efficient ConvNets" (ICLR) and
Liu et al., 2017, "Learning Efficient Convolutional Networks through Network Slimming" (ICCV):
the pruned channels are cut out of every tensor that holds them, so the shrunken network runs
faster on stock hardware, not merely with zeros. :func:`shrink_group_` cuts one
:class:`~lit_prune.pruning.channel_groups.StructuredGroup` down to the units it keeps: it
slices every parameter and buffer the group lists (a parameter becomes a new ``nn.Parameter``;
an accumulated ``.grad`` is sliced with it), updates the shape attributes of the layers
(``out_channels``, ``in_features``, ``num_features``, ``normalized_shape``) and the unit
counters (``num_heads``, ``attn_dim``), and returns a JSON-friendly record for the surgery
history (:mod:`lit_prune.pruning.surgery_history`).

Surgery replaces parameters, so an optimizer, a mask enforcer or anything else holding the old
tensors must be rebuilt afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.pruning.channel_groups import StructuredGroup, TensorSlice, prunable_groups

__all__ = ["SURGERY_OPERATIONS", "check_keep", "remove_channels_", "shrink_group_", "shrink_groups_"]

SURGERY_OPERATIONS: dict[str, str] = {
    "channels": "remove_channels",
    "heads": "remove_heads",
    "mlp_units": "remove_mlp_units",
}
"""The history operation recorded for each group kind."""

_UNIT_WORDS = {"channels": "channels", "heads": "heads", "mlp_units": "hidden units"}


def shrink_group_(model: nn.Module, group: StructuredGroup, keep: Sequence[int] | Tensor) -> dict[str, Any] | None:
    """Removes every unit of ``group`` that is not in ``keep``, in place.

    Args:
        model: The network ``group`` was built from (see
            :func:`~lit_prune.pruning.channel_groups.prunable_groups`), at the widths it had then.
        group: The coupled units to shrink.
        keep: Indices of the units to keep, unique, in ``[0, group.size)``, at least one; any
            order (they are sorted, so the kept units keep their relative order).

    Returns:
        The history record ``{"op", "group", "size", "keep"}`` (``size`` is the number of
        units before the surgery, ``keep`` a sorted list of ints), or ``None`` when ``keep``
        holds every unit and nothing changed.

    Raises:
        TypeError: If ``keep`` is not a sequence of ints.
        ValueError: If ``keep`` is empty, repeats or exceeds the unit indices, or the model's
            widths no longer match ``group`` (rebuild the groups after each surgery).
    """
    kept = check_keep(keep, group)
    _check_current_size(model, group)
    if len(kept) == group.size:
        return None
    modules = dict(model.named_modules())
    touched: dict[str, nn.Module] = {}
    with torch.no_grad():
        for tensor_slice in group.slices:
            module = modules[tensor_slice.module]
            _slice_tensor_(module, tensor_slice, kept)
            touched[tensor_slice.module] = module
        for module in touched.values():
            _sync_shape_attributes(module)
        for counter in group.counters:
            setattr(modules[counter.module], counter.attr, len(kept) * counter.per_unit)
    return {"op": SURGERY_OPERATIONS[group.kind], "group": group.name, "size": group.size, "keep": kept}


def shrink_groups_(
    model: nn.Module,
    keep: Mapping[str, Sequence[int] | Tensor],
    history: list[dict[str, Any]] | None = None,
    kinds: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Shrinks several groups of a supported network at once, in place.

    The groups are looked up with ``prunable_groups(model, include_residual=True)``, so any
    group name of the network is accepted. Indices refer to the widths before this call. Groups
    touch disjoint tensor dimensions, so the order of ``keep`` does not matter.

    Args:
        model: A network supported by :func:`~lit_prune.pruning.channel_groups.prunable_groups`.
        keep: Group name to the indices of the units to keep (e.g. the result of
            :func:`~lit_prune.pruning.structured_importance.select_channels_for_removed_fraction`).
        history: A list to append the records to (the module's surgery history); ``None`` to
            only return them.
        kinds: Accept only groups of these kinds (see
            :data:`~lit_prune.pruning.channel_groups.GROUP_KINDS`); ``None`` accepts all.

    Returns:
        The records of the groups that changed, in ``keep`` order (unchanged groups give none).

    Raises:
        TypeError: If ``model`` is not supported, ``keep`` is not a mapping, or ``history`` is
            not a list.
        ValueError: If a name is not a group of ``model`` or not of an accepted kind (the
            message lists the valid names), or a keep list is invalid (see :func:`shrink_group_`).
    """
    if not isinstance(keep, Mapping):
        raise TypeError(f"keep must be a mapping of group name to kept unit indices, got {type(keep).__name__}")
    if history is not None and not isinstance(history, list):
        raise TypeError(f"history must be a list of surgery records or None, got {type(history).__name__}")
    groups = prunable_groups(model, include_residual=True, kinds=kinds)
    for name in keep:
        if name not in groups:
            raise ValueError(
                f"{name!r} is not a prunable group of {type(model).__name__}"
                + (f" of kind {list(kinds)}" if kinds is not None else "")
                + f"; valid group names: {', '.join(groups)}"
            )
    records = []
    for name, indices in keep.items():
        record = shrink_group_(model, groups[name], indices)
        if record is not None:
            records.append(record)
    if history is not None:
        history.extend(records)
    return records


def remove_channels_(
    model: nn.Module,
    keep: Mapping[str, Sequence[int] | Tensor],
    history: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Removes convolution channels with their batch norm entries and consumer inputs, in place.

    Channels of a ResNet residual stream (group ``layer1`` ...) are removed from every layer
    that adds into the stream and every layer that reads it; block-internal groups
    (``layer1.0.conv1``) and VGG groups (``features.0``) only touch the convolution, its batch
    norm and the next layer's inputs.

    Args:
        model: A :class:`~lit_prune.models.CifarResNet`, torchvision ``ResNet`` with
            ``BasicBlock`` or :class:`~lit_prune.models.CifarVGG`.
        keep: Channel-group name to the indices of the channels to keep.
        history: A list to append the records to; ``None`` to only return them.

    Returns:
        The records of the groups that changed.

    Raises:
        TypeError: If ``model`` is not supported or an argument has the wrong type.
        ValueError: If a name is not a channel group of ``model`` or a keep list is invalid.
    """
    return shrink_groups_(model, keep, history, kinds=("channels",))


def check_keep(keep: Sequence[int] | Tensor, group: StructuredGroup) -> list[int]:
    """Validates the kept unit indices of ``group`` and returns them sorted.

    Args:
        keep: Indices of the units to keep.
        group: The group they refer to.

    Returns:
        The indices as a sorted list of Python ints.

    Raises:
        TypeError: If ``keep`` is not a sequence or 1-D tensor of ints.
        ValueError: If it is empty, repeats an index, or holds one outside ``[0, group.size)``.
    """
    units = _UNIT_WORDS[group.kind]
    if isinstance(keep, Tensor):
        if keep.dim() != 1 or keep.dtype.is_floating_point or keep.dtype == torch.bool:
            raise TypeError(
                f"keep for {group.name!r} must be a 1-D integer tensor, got {keep.dtype} {tuple(keep.shape)}"
            )
        keep = keep.tolist()
    if isinstance(keep, (str, bytes)) or not isinstance(keep, Sequence):
        raise TypeError(f"keep for {group.name!r} must be a list of {units} indices, got {type(keep).__name__}")
    for index in keep:
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"keep for {group.name!r} must hold ints, got {index!r}")
    kept = sorted(keep)
    if not kept:
        raise ValueError(
            f"keep for {group.name!r} is empty: at least one of its {group.size} {units} must stay "
            "(removing every unit would disconnect the network)"
        )
    if len(set(kept)) != len(kept):
        raise ValueError(f"keep for {group.name!r} repeats an index: {kept}")
    if kept[0] < 0 or kept[-1] >= group.size:
        raise ValueError(f"keep for {group.name!r} must hold indices in [0, {group.size}), got {kept[0]}..{kept[-1]}")
    return kept


def _check_current_size(model: nn.Module, group: StructuredGroup) -> None:
    first = group.slices[0]
    dim_size = getattr(model.get_submodule(first.module), first.attr).shape[first.dim]
    if first.num_units(dim_size) != group.size:
        raise ValueError(
            f"group {group.name!r} was built for {group.size} units but {first.tensor_name} now holds "
            f"{first.num_units(dim_size)}; call prunable_groups(model) again after every surgery"
        )


def _slice_tensor_(module: nn.Module, tensor_slice: TensorSlice, kept: list[int]) -> None:
    tensor = getattr(module, tensor_slice.attr)
    index = tensor_slice.indices(kept, tensor.shape[tensor_slice.dim]).to(tensor.device)
    smaller = tensor.detach().index_select(tensor_slice.dim, index)
    if isinstance(tensor, nn.Parameter):
        parameter = nn.Parameter(smaller, requires_grad=tensor.requires_grad)
        if tensor.grad is not None:
            parameter.grad = tensor.grad.index_select(tensor_slice.dim, index)
        setattr(module, tensor_slice.attr, parameter)
    else:
        setattr(module, tensor_slice.attr, smaller)


def _sync_shape_attributes(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        module.out_channels = module.weight.shape[0]
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        reference = module.weight if module.weight is not None else module.running_mean
        if reference is not None:
            module.num_features = reference.shape[0]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = (module.weight.shape[0],)
