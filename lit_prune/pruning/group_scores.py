"""Scores of structured units: L1/L2 norms, batch-norm scale, Taylor.

Each score gives one number per unit of each
:class:`~lit_prune.pruning.channel_groups.StructuredGroup`; higher means more important. They
are computed over the slices that *produce* a unit (convolution filters and biases, batch-norm
entries, ``qkv``/``gate`` rows of a head, ``fc1`` rows of an MLP unit), and for a coupled group
(a ResNet residual stream) the score of each member layer is summed:

- ``l1`` / ``l2``: norm of the unit's producing weights (Li et al., 2017, "Pruning Filters for
  Efficient ConvNets", ICLR); the sum of the per-layer norms in a coupled group;
- ``bn_scale``: ``|gamma|`` of the unit's batch norm, summed over the group's batch norms
  (network slimming, Liu et al., 2017, "Learning Efficient Convolutional Networks through
  Network Slimming", ICCV);
- ``taylor``: first-order Taylor estimate of the loss change when the unit is removed,
  ``|sum(g * w)|`` over each producing layer's slice (weights and biases, batch-norm scale and
  shift), summed over the layers of the group (Molchanov et al., 2019, "Importance Estimation
  for Neural Network Pruning", CVPR, which squares the sum; the absolute value orders a single
  layer's units the same way). :func:`taylor_importance` accumulates the gradients over
  calibration batches deterministically: dropout and drop-path off, batch norm on batch
  statistics by default; :func:`taylor_from_gradients` reads gradients already in ``.grad``.

FPGM, the geometric-median score, lives in :mod:`lit_prune.pruning.fpgm`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.pruning.channel_groups import StructuredGroup, TensorSlice
from lit_prune.pruning.score_registry import register_score
from lit_prune.pruning.scoring_mode import check_bn_mode, scoring_mode

__all__ = [
    "bn_scale_importance",
    "check_groups",
    "l1_importance",
    "l2_importance",
    "producer_weight_rows",
    "taylor_from_gradients",
    "taylor_importance",
    "unit_rows",
]


@register_score("l1", kind="groups")
def l1_importance(model: nn.Module, groups: Mapping[str, StructuredGroup]) -> dict[str, Tensor]:
    """Scores every unit by the L1 norm of its producing weights (Li et al., 2017).

    Args:
        model: The network the groups were built from, at its current widths.
        groups: Group name to group, e.g. from
            :func:`~lit_prune.pruning.channel_groups.prunable_groups`.

    Returns:
        Group name to a 1-D float32 tensor of ``group.size`` scores, detached.

    Raises:
        TypeError: If ``groups`` is not a mapping of groups.
        ValueError: If a group no longer matches the model's widths or has no producing weights.
    """
    return _per_layer_sum(model, groups, "l1", lambda rows: rows.abs().sum(1))


@register_score("l2", kind="groups")
def l2_importance(model: nn.Module, groups: Mapping[str, StructuredGroup]) -> dict[str, Tensor]:
    """Scores every unit by the L2 norm of its producing weights (Li et al., 2017).

    Args, returns and errors as :func:`l1_importance`.
    """
    return _per_layer_sum(model, groups, "l2", lambda rows: rows.pow(2).sum(1).sqrt())


@register_score("bn_scale", kind="groups", needs=("batch_norm",))
def bn_scale_importance(model: nn.Module, groups: Mapping[str, StructuredGroup]) -> dict[str, Tensor]:
    """Scores every unit by ``|gamma|`` of its batch norms (network slimming, Liu et al., 2017).

    Args:
        model: The network the groups were built from, at its current widths.
        groups: Group name to group.

    Returns:
        Group name to a 1-D float32 tensor of ``group.size`` scores, detached.

    Raises:
        TypeError: If ``groups`` is not a mapping of groups.
        ValueError: If a group has no affine batch norm (a Vision Transformer) or no longer
            matches the model's widths.
    """
    check_groups(groups)
    modules = dict(model.named_modules())
    scores: dict[str, Tensor] = {}
    for name, group in groups.items():
        total: Tensor | None = None
        for tensor_slice in group.slices:
            module = modules[tensor_slice.module]
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and tensor_slice.attr == "weight":
                score = unit_rows(group, tensor_slice, module.weight).abs().sum(1)
                total = score if total is None else total + score
        if total is None:
            raise ValueError(
                f"score 'bn_scale' needs an affine batch norm on the units of group {group.name!r} "
                f"({group.kind}); use 'l1', 'l2' or 'taylor' there"
            )
        scores[name] = total.detach().float()
    return scores


@register_score("taylor", kind="groups", needs=("batches", "gradients"), settings={"dropout": "off"})
def taylor_importance(
    model: nn.Module,
    groups: Mapping[str, StructuredGroup],
    batches: Iterable[tuple[Tensor, Tensor]],
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    bn_mode: str = "train",
) -> dict[str, Tensor]:
    """Scores every unit of ``groups`` by the first-order Taylor criterion on calibration batches.

    Molchanov, Mallya, Tyree, Frosio & Kautz, 2019, "Importance Estimation for Neural Network
    Pruning" (CVPR). The gradients of ``loss_fn`` summed over ``batches`` are accumulated on a
    copy of ``model`` (so the model's ``.grad``, batch-norm statistics and modes are untouched)
    and scored by :func:`taylor_from_gradients`. The copy runs under
    :func:`~lit_prune.pruning.scoring_mode.scoring_mode`: dropout and drop-path are off, so the
    scores depend only on the network and the batches, never on the random state. Batch norm
    uses the statistics of each batch by default, as in the authors' code (NVlabs/Taylor_pruning
    accumulates the criterion over training iterations, ``model.train()``); ``bn_mode="eval"``
    uses the running statistics instead.

    Args:
        model: The network the groups were built from, at its current widths.
        groups: Group name to group, e.g. from
            :func:`~lit_prune.pruning.channel_groups.prunable_groups`.
        batches: Calibration batches ``(inputs, targets)`` on the model's device.
        loss_fn: ``loss_fn(logits, targets)`` returning the batch-mean loss.
        bn_mode: ``"train"`` (default) or ``"eval"``, see above.

    Returns:
        Group name to a 1-D float32 tensor of unit scores, detached.

    Raises:
        UserError: If ``bn_mode`` is not ``"eval"`` or ``"train"`` or ``batches`` is empty.
        TypeError: If ``groups`` is not a mapping of groups.
        ValueError: If a group no longer matches the model's widths.
    """
    bn_mode = check_bn_mode(bn_mode)
    check_groups(groups)
    network = copy.deepcopy(model)
    network.zero_grad(set_to_none=True)
    count = 0
    with scoring_mode(network, bn_mode):
        for inputs, targets in batches:
            loss_fn(network(inputs), targets).backward()
            count += 1
    if count == 0:
        raise UserError("batches is empty: the taylor score needs at least one calibration batch (inputs, targets)")
    return taylor_from_gradients(network, groups)


def taylor_from_gradients(model: nn.Module, groups: Mapping[str, StructuredGroup]) -> dict[str, Tensor]:
    """The Taylor criterion ``|sum(g * w)|`` from the gradients already accumulated in ``.grad``.

    Args:
        model: The network, after ``loss.backward()`` on a few batches.
        groups: Group name to group.

    Returns:
        Group name to a 1-D float32 tensor of unit scores, detached.

    Raises:
        TypeError: If ``groups`` is not a mapping of groups.
        ValueError: If a producing parameter has no ``.grad`` or a group no longer matches the
            model's widths.
    """
    check_groups(groups)
    modules = dict(model.named_modules())
    scores: dict[str, Tensor] = {}
    for name, group in groups.items():
        per_module: dict[str, Tensor] = {}
        for tensor_slice in group.slices:
            tensor = getattr(modules[tensor_slice.module], tensor_slice.attr)
            if tensor_slice.role == "consumer" or not isinstance(tensor, nn.Parameter):
                continue
            if tensor.grad is None:
                raise ValueError(
                    f"score 'taylor' needs gradients accumulated in .grad, but {tensor_slice.tensor_name} "
                    "has none; run loss.backward() on a few batches before scoring"
                )
            products = unit_rows(group, tensor_slice, tensor.grad * tensor).sum(1)
            previous = per_module.get(tensor_slice.module)
            per_module[tensor_slice.module] = products if previous is None else previous + products
        if not per_module:
            raise ValueError(f"group {group.name!r} has no producing weights to score with 'taylor'")
        scores[name] = sum(products.abs() for products in per_module.values()).detach().float()
    return scores


def producer_weight_rows(model: nn.Module, group: StructuredGroup) -> list[Tensor]:
    """The weights of each layer producing ``group``'s units, as ``(units, weights of a unit)``.

    Args:
        model: The network, at the widths ``group`` describes.
        group: The group.

    Returns:
        One detached tensor per producing layer (convolution, linear), in the group's order.

    Raises:
        ValueError: If the group no longer matches the model's widths.
    """
    modules = dict(model.named_modules())
    return [
        unit_rows(group, tensor_slice, modules[tensor_slice.module].weight)
        for tensor_slice in group.slices
        if tensor_slice.role == "producer" and tensor_slice.attr == "weight"
    ]


def unit_rows(group: StructuredGroup, tensor_slice: TensorSlice, tensor: Tensor) -> Tensor:
    """Rearranges ``tensor`` to ``(units, everything the unit owns in it)``, detached.

    Raises:
        ValueError: If the tensor does not hold ``group.size`` units along the slice's dimension.
    """
    dim_size = tensor.shape[tensor_slice.dim]
    if tensor_slice.num_units(dim_size) != group.size:
        raise ValueError(
            f"group {group.name!r} was built for {group.size} units but {tensor_slice.tensor_name} holds "
            f"{tensor_slice.num_units(dim_size)}; call prunable_groups(model) again after surgery"
        )
    moved = tensor.detach().movedim(tensor_slice.dim, 0)
    chunked = moved.reshape(tensor_slice.chunks, group.size, tensor_slice.width, -1)
    return chunked.transpose(0, 1).reshape(group.size, -1)


def check_groups(groups: Mapping[str, StructuredGroup]) -> None:
    """Checks that ``groups`` is a non-empty mapping of name to group.

    Raises:
        TypeError: If it is not.
    """
    if not isinstance(groups, Mapping) or not groups:
        raise TypeError("groups must be a non-empty mapping of name to StructuredGroup, e.g. prunable_groups(model)")
    for name, group in groups.items():
        if not isinstance(group, StructuredGroup):
            raise TypeError(f"groups[{name!r}] must be a StructuredGroup, got {type(group).__name__}")


def _per_layer_sum(
    model: nn.Module, groups: Mapping[str, StructuredGroup], score: str, per_layer: Callable[[Tensor], Tensor]
) -> dict[str, Tensor]:
    """Sums ``per_layer(rows)`` over the producing layers of each group."""
    check_groups(groups)
    scores: dict[str, Tensor] = {}
    for name, group in groups.items():
        rows = producer_weight_rows(model, group)
        if not rows:
            raise ValueError(f"group {group.name!r} has no producing weights to score with {score!r}")
        scores[name] = sum(per_layer(layer) for layer in rows).detach().float()
    return scores
