"""The surgery history: replaying structured pruning on a freshly built network.

A shrunken network cannot take its checkpoint's weights with strict loading until it has the
same shapes. Every surgery therefore returns a record, and the list of records (the history)
is saved with the checkpoint. A record is plain data (JSON and pickle friendly)::

    {"op": "remove_channels", "group": "layer1.0.conv1", "size": 16, "keep": [0, 2, 3, ...]}

``op`` is ``remove_channels``, ``remove_heads`` or ``remove_mlp_units``; ``group`` a group name
of :func:`~lit_prune.pruning.channel_groups.prunable_groups`; ``size`` the number of units
before the surgery; ``keep`` the sorted indices of the units kept. :func:`replay_history`
applies the records in order to a fresh network of the same architecture, after which the
shrunken state dict loads strictly. :func:`remap_mask` carries an unstructured
:class:`~lit_prune.pruning.mask.PruningMask` through the same records, so masks and structured
surgery combine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.channel_surgery import SURGERY_OPERATIONS, check_keep, shrink_group_
from lit_prune.pruning.mask import PruningMask

__all__ = ["check_history", "remap_mask", "replay_history"]

_RECORD_KEYS = ("op", "group", "size", "keep")
_KIND_OF_OPERATION = {operation: kind for kind, operation in SURGERY_OPERATIONS.items()}


def check_history(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validates the form of a surgery history (not yet against a network).

    Args:
        history: A list of records as returned by the surgery functions.

    Returns:
        A copy as a list of plain dicts with ``keep`` as a list of ints.

    Raises:
        TypeError: If ``history`` is not a list of mappings, or a field has the wrong type.
        ValueError: If a record misses a key or names an unknown operation.
    """
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise TypeError(f"a surgery history must be a list of records, got {type(history).__name__}")
    checked = []
    for position, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise TypeError(f"surgery record {position} must be a mapping, got {type(record).__name__}")
        missing = [key for key in _RECORD_KEYS if key not in record]
        if missing:
            raise ValueError(f"surgery record {position} lacks {missing}; a record has the keys {list(_RECORD_KEYS)}")
        if record["op"] not in _KIND_OF_OPERATION:
            raise ValueError(
                f"surgery record {position} has unknown op {record['op']!r}; allowed: {list(_KIND_OF_OPERATION)}"
            )
        if not isinstance(record["group"], str):
            raise TypeError(f"surgery record {position}: group must be a string, got {record['group']!r}")
        size = record["size"]
        keep = record["keep"]
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"surgery record {position}: size must be an int, got {size!r}")
        if isinstance(keep, (str, bytes)) or not isinstance(keep, Sequence):
            raise TypeError(f"surgery record {position}: keep must be a list of ints, got {keep!r}")
        checked.append({"op": record["op"], "group": record["group"], "size": size, "keep": list(keep)})
    return checked


def replay_history(model: nn.Module, history: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Re-applies recorded surgery to a freshly built network, in place.

    After this the network has exactly the shapes of the one the history was recorded on, so
    that network's state dict loads with ``strict=True``. The weights themselves are not
    restored (load them afterwards).

    Args:
        model: A network of the same architecture and initial widths as the recorded one.
        history: The records, in the order they were made.

    Returns:
        ``model``, for chaining.

    Raises:
        TypeError: If ``history`` is malformed or ``model`` is not supported.
        ValueError: If a record names a group ``model`` lacks, an operation that does not fit
            the group's kind, or a unit count that differs from the model's (the history
            belongs to another network or was already applied).
    """
    for position, record in enumerate(check_history(history)):
        groups = prunable_groups(model, include_residual=True)
        group = groups.get(record["group"])
        if group is None:
            raise ValueError(
                f"surgery record {position} names group {record['group']!r}, which "
                f"{type(model).__name__} does not have; its groups are: {', '.join(groups)}"
            )
        _check_record_fits(position, record, group.kind, group.size)
        shrink_group_(model, group, record["keep"])
    return model


def remap_mask(mask: PruningMask, model: nn.Module, history: Sequence[Mapping[str, Any]]) -> PruningMask:
    """Carries an unstructured pruning mask through recorded surgery.

    Each masked parameter that a record shrinks keeps exactly the entries of the kept units,
    so ``remap_mask(mask, ...)`` fits the shrunken network and prunes the same surviving
    weights as before. Parameters the records do not touch keep their mask unchanged.

    Args:
        mask: Mask over the network's parameters as they were *before* the records.
        model: A network of the same architecture (its widths do not matter; only its structure
            is read).
        history: The records to carry the mask through, in order.

    Returns:
        A new mask with the shrunken shapes.

    Raises:
        TypeError: If ``mask`` is not a :class:`PruningMask` or ``history`` is malformed.
        ValueError: If a record names an unknown group or its unit count does not match the
            mask's shapes.
    """
    if not isinstance(mask, PruningMask):
        raise TypeError(f"mask must be a PruningMask, got {type(mask).__name__}")
    groups = prunable_groups(model, include_residual=True)
    entries = dict(mask.items())
    for position, record in enumerate(check_history(history)):
        group = groups.get(record["group"])
        if group is None:
            raise ValueError(
                f"surgery record {position} names group {record['group']!r}, which "
                f"{type(model).__name__} does not have; its groups are: {', '.join(groups)}"
            )
        for tensor_slice in group.slices:
            entry = entries.get(tensor_slice.tensor_name)
            if entry is None:
                continue
            dim_size = entry.shape[tensor_slice.dim]
            _check_record_fits(position, record, group.kind, tensor_slice.num_units(dim_size))
            kept = check_keep(record["keep"], replace(group, size=record["size"]))
            index = tensor_slice.indices(kept, dim_size).to(entry.device)
            entries[tensor_slice.tensor_name] = entry.index_select(tensor_slice.dim, index)
    return PruningMask(entries)


def _check_record_fits(position: int, record: Mapping[str, Any], kind: str, units: int) -> None:
    expected_op = SURGERY_OPERATIONS[kind]
    if record["op"] != expected_op:
        raise ValueError(
            f"surgery record {position} applies {record['op']!r} to group {record['group']!r}, whose units "
            f"are {kind}; that group takes {expected_op!r}"
        )
    if record["size"] != units:
        raise ValueError(
            f"surgery record {position} expects group {record['group']!r} to have {record['size']} units, "
            f"but it has {units}: the history belongs to another network or was already applied"
        )
