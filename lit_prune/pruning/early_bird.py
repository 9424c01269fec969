"""Early-bird tickets: channel masks from batch-norm scales and the test that they have settled.

You et al., 2020, "Drawing Early-Bird Tickets: Towards More Efficient Training of Deep
Networks" (ICLR) observe that the channel mask network slimming would draw (Liu et al., 2017,
"Learning Efficient Convolutional Networks through Network Slimming", ICCV) stops changing
early in training. They draw a mask at the end of every epoch, keep the last few, and declare
the ticket found when the newest mask differs little from each of the others.

- :func:`bn_scale_channel_mask` draws the mask: one global threshold over the ``|gamma|`` of
  every batch norm of the prunable channel groups (each batch-norm channel is one entry), so
  that a fraction ``channel_fraction`` of the entries fall below it, as in the paper. A group fed by one
  batch norm (a VGG layer, a ResNet block-internal channel) loses exactly the channels whose
  entry is below the threshold. In a coupled group (a ResNet residual stream, written by the
  stem or a shortcut and by every block's last batch norm) a channel is removed only if *all*
  its batch-norm entries are below the threshold: it stays as long as any layer still writes
  to it with a large scale (the "any" rule, i.e. the channel's score is its largest ``|gamma|``).
  Such groups therefore lose fewer channels than ``channel_fraction``; pass ``include_residual=False``
  to prune only block-internal channels. Both rules deliberately differ from the reference
  code (GATECH-EIC/Early-Bird-Tickets, ``main.py`` ``pruning`` and ``resprune.py``): it masks
  every batch-norm entry on its own, keeping ``|gamma| > y[int(total * percent)]`` of the
  sorted scales (so one entry more than ``int(total * percent)`` falls, and every entry tied
  at the threshold), and measures mask distances over those per-entry masks; on its
  pre-activation ResNets the residual stream is never narrowed (a ``channel_selection`` layer
  picks what each block reads). Here exactly ``round(channel_fraction * entries)`` entries fall below,
  and a residual channel written by several batch norms goes only under the "any" rule above.
- :func:`mask_distance` is the normalised Hamming distance between two masks.
- :class:`EarlyBirdDetector` keeps the last ``window`` masks (5 in the paper) and fires when
  the largest distance between the newest mask and the others is below ``threshold`` (0.1).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.pruning.channel_groups import StructuredGroup, prunable_groups
from lit_prune.validation import check_fraction

__all__ = ["ChannelMask", "EarlyBirdDetector", "bn_scale_channel_mask", "keep_indices", "mask_distance"]

ChannelMask = dict[str, Tensor]
"""Channel-group name to a 1-D bool tensor over the group's channels (``True`` = keep)."""


def bn_scale_channel_mask(
    model: nn.Module, channel_fraction: float, include_residual: bool = True, max_group_fraction: float = 0.9
) -> ChannelMask:
    """Draws the channel mask network slimming would prune at ``channel_fraction``.

    Args:
        model: A CNN supported by :func:`~lit_prune.pruning.channel_groups.prunable_groups`
            whose channel groups carry batch norms (CIFAR ResNets, ResNet-18, VGG16-BN).
        channel_fraction: Fraction of the batch-norm entries below the global threshold, in ``(0, 1)``.
        include_residual: Also mask the channels of ResNet residual streams (see the module
            docstring for how their several batch norms decide).
        max_group_fraction: Largest fraction of one group's channels that may go, in
            ``(0, 1]``; at least one channel of every group always stays. A group that would
            lose more keeps its channels of largest ``|gamma|``.

    Returns:
        Group name to a bool keep mask, for every channel group, in network order. Ties in
        ``|gamma|`` are broken by position (earlier entries are removed first).

    Raises:
        TypeError: If the model is not supported (the message lists the supported ones).
        ValueError: If ``channel_fraction`` or ``max_group_fraction`` is out of range, or the model has
            no channel group or a group has no affine batch norm (a Vision Transformer).
    """
    channel_fraction = check_fraction(
        channel_fraction, "channel_fraction", zero=False, meaning="the fraction of channels to prune"
    )
    if isinstance(max_group_fraction, bool) or not isinstance(max_group_fraction, (int, float)):
        raise TypeError(f"max_group_fraction must be a number in (0, 1], got {max_group_fraction!r}")
    if not 0.0 < max_group_fraction <= 1.0:
        raise ValueError(f"max_group_fraction must be in (0, 1], got {max_group_fraction}")
    groups = prunable_groups(model, include_residual=include_residual, kinds=["channels"])
    if not groups:
        raise ValueError(
            f"{type(model).__name__} has no convolution channel groups; early-bird channel masks need a CNN "
            "with batch norms (CIFAR ResNets, ResNet-18, VGG16-BN)"
        )
    scales = {name: _batch_norm_scales(model, group) for name, group in groups.items()}
    flat = torch.cat([values.reshape(-1) for values in scales.values()])
    below = torch.zeros(flat.numel(), dtype=torch.bool)
    below[torch.sort(flat, stable=True).indices[: round(channel_fraction * flat.numel())]] = True
    mask: ChannelMask = {}
    offset = 0
    for name, values in scales.items():
        count = values.numel()
        removed = below[offset : offset + count].reshape(values.shape).all(dim=0)
        offset += count
        mask[name] = _capped(~removed, values.amax(dim=0), max_group_fraction)
    return mask


def keep_indices(mask: Mapping[str, Tensor]) -> dict[str, list[int]]:
    """Turns a channel mask into the keep lists of ``ImageClassifier.apply_surgery``.

    Args:
        mask: Group name to a 1-D bool keep mask.

    Returns:
        Group name to the sorted indices of the kept channels.
    """
    return {name: torch.nonzero(keep, as_tuple=False).reshape(-1).tolist() for name, keep in mask.items()}


def mask_distance(first: Mapping[str, Tensor], second: Mapping[str, Tensor]) -> float:
    """Normalised Hamming distance: the fraction of channels on which two masks disagree.

    Args:
        first: Group name to a 1-D bool mask.
        second: A mask over the same groups with the same sizes.

    Returns:
        Disagreeing entries over all entries, in ``[0, 1]``.

    Raises:
        ValueError: If the masks cover different groups or sizes, or are empty.
    """
    if list(first) != list(second):
        raise ValueError(
            f"masks cover different groups: {sorted(set(first) ^ set(second)) or 'same names in another order'}; "
            "compare masks drawn from the same network"
        )
    differing, total = 0, 0
    for name, keep in first.items():
        other = second[name]
        if keep.shape != other.shape:
            raise ValueError(f"masks of group {name!r} have shapes {tuple(keep.shape)} and {tuple(other.shape)}")
        differing += int((keep.cpu() != other.cpu()).sum())
        total += keep.numel()
    if total == 0:
        raise ValueError("masks are empty: there is nothing to compare")
    return differing / total


class EarlyBirdDetector:
    """Keeps the last ``window`` channel masks and tells when the early-bird ticket has emerged.

    You et al., 2020: the ticket is found once ``window`` masks are held and the largest
    normalised Hamming distance between the newest mask and each older one is below
    ``threshold``.

    Args:
        window: Number of masks kept (the paper's 5), at least 2.
        threshold: The distance bound epsilon (the paper's 0.1), in ``(0, 1]``.

    Raises:
        ValueError: If ``window`` or ``threshold`` is out of range.
    """

    def __init__(self, window: int = 5, threshold: float = 0.1) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 2:
            raise ValueError(f"window must be an integer >= 2 (masks compared with each other), got {window!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be a distance in (0, 1], got {threshold!r}")
        self.window = window
        self.threshold = float(threshold)
        self.masks: deque[ChannelMask] = deque(maxlen=window)

    def update(self, mask: Mapping[str, Tensor]) -> float | None:
        """Adds the newest mask (the oldest drops out of a full window).

        Args:
            mask: Group name to 1-D bool keep mask, over the same groups every time.

        Returns:
            The largest distance between ``mask`` and the other masks now in the window, or
            ``None`` when it is the only one.

        Raises:
            ValueError: If ``mask`` does not cover the same groups and sizes as the others.
        """
        newest = {name: keep.detach().to("cpu", torch.bool).clone() for name, keep in mask.items()}
        if self.masks:
            mask_distance(newest, self.masks[-1])  # raises before the window changes if the groups differ
        self.masks.append(newest)
        return self.max_distance()

    def max_distance(self) -> float | None:
        """The largest distance between the newest mask and the others, ``None`` with fewer than two."""
        if len(self.masks) < 2:
            return None
        newest = self.masks[-1]
        return max(mask_distance(newest, older) for older in list(self.masks)[:-1])

    @property
    def found(self) -> bool:
        """Whether the window is full and every older mask is within ``threshold`` of the newest."""
        distance = self.max_distance()
        return len(self.masks) == self.window and distance is not None and distance < self.threshold

    def state_dict(self) -> dict[str, Any]:
        """The masks held, oldest first, for checkpointing."""
        return {"masks": [dict(mask) for mask in self.masks]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores the masks saved by :meth:`state_dict`.

        Raises:
            ValueError: If the state holds more masks than the window.
        """
        masks = list(state["masks"])
        if len(masks) > self.window:
            raise ValueError(f"the saved state holds {len(masks)} masks but the window is {self.window}")
        self.masks = deque(
            ({name: keep.to(torch.bool) for name, keep in mask.items()} for mask in masks), maxlen=self.window
        )


def _batch_norm_scales(model: nn.Module, group: StructuredGroup) -> Tensor:
    """``|gamma|`` of every batch norm of ``group``: a ``(batch norms, channels)`` CPU tensor."""
    rows = []
    for tensor_slice in group.slices:
        module = model.get_submodule(tensor_slice.module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and tensor_slice.attr == "weight":
            rows.append(module.weight.detach().abs().float().cpu())
    if not rows:
        raise ValueError(
            f"channel group {group.name!r} has no affine batch norm, so batch-norm scales cannot rank its "
            "channels; early-bird masks need a CNN with BatchNorm2d after every pruned convolution"
        )
    return torch.stack(rows)


def _capped(keep: Tensor, scores: Tensor, max_group_fraction: float) -> Tensor:
    """Limits the channels a group loses: past the cap, it keeps its ``size - allowed`` best channels."""
    size = keep.numel()
    allowed = min(math.floor(max_group_fraction * size + 1e-9), size - 1)
    if int((~keep).sum()) <= allowed:
        return keep
    kept = torch.zeros_like(keep)
    kept[torch.sort(scores, descending=True, stable=True).indices[: size - allowed]] = True
    return kept
