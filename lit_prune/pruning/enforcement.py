"""Keeping pruned weights exactly zero during training, without forward hooks.

Pruned weights are stored as zeros in the ordinary parameters (no ``weight_orig`` /
``weight_mask`` reparametrisation, no forward pre-hook), so the forward pass costs nothing
extra and state-dict keys stay plain. Three in-place operations keep them at zero:

1. at prune time, :func:`clear_pruned_optimizer_state_` zeroes the optimizer state (momentum,
   Adam moments) at pruned positions and :meth:`PruningMask.apply_` zeroes the weights;
2. every step, after ``backward`` (and after AMP unscaling) but before gradient clipping and
   ``optimizer.step()``, :func:`zero_pruned_gradients_` zeroes their gradients;
3. after ``optimizer.step()``, :func:`zero_pruned_weights_` re-zeroes them.

With 1 and 2, SGD (momentum, Nesterov, L2 weight decay), Adam, AdamW and AMSGrad leave a
zero weight exactly zero, because every update term at that position is a product with a zero
gradient, zero state or zero weight; step 3 is a cheap guarantee for optimizers that are not
of that form. For a training loop, :class:`MaskEnforcer` caches the name lookups and the
multiplicative masks so a step costs one fused multiply over the masked tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from lit_prune.pruning.mask import PruningMask

__all__ = [
    "MaskEnforcer",
    "clear_pruned_optimizer_state_",
    "zero_pruned_gradients_",
    "zero_pruned_weights_",
]


class MaskEnforcer:
    """Applies a fixed mask to a model's gradients, weights and optimizer state.

    The masked parameters are looked up once; the keep-masks are cached as ``0/1`` tensors in
    each parameter's dtype and on its device (and re-cached if the model is moved or cast),
    so each call is a single ``torch._foreach_mul_`` over the masked tensors. Build a new
    enforcer after pruning again or after replacing the model's parameter objects.

    Args:
        model: The network the mask refers to.
        mask: The mask to enforce.

    Raises:
        TypeError: If ``model`` or ``mask`` has the wrong type.
        ValueError: If the mask does not fit the model (see :meth:`PruningMask.validate`).
    """

    def __init__(self, model: nn.Module, mask: PruningMask) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(mask, PruningMask):
            raise TypeError(f"mask must be a PruningMask, got {type(mask).__name__}")
        mask.validate(model)
        named = dict(model.named_parameters())
        self.mask = mask
        self._params: list[nn.Parameter] = [named[name] for name in mask]
        self._keep: list[Tensor] = [self._keep_factor(name, param) for name, param in zip(mask, self._params)]

    def zero_gradients_(self) -> None:
        """Zeroes the gradients of pruned weights in place (parameters without a gradient are skipped)."""
        self._refresh()
        grads: list[Tensor] = []
        factors: list[Tensor] = []
        for param, keep in zip(self._params, self._keep):
            if param.grad is None:
                continue
            grads.append(param.grad)
            factors.append(keep if param.grad.dtype == keep.dtype else keep.to(param.grad.dtype))
        if grads:
            torch._foreach_mul_(grads, factors)

    def zero_weights_(self) -> None:
        """Zeroes the pruned weights in place."""
        self._refresh()
        with torch.no_grad():
            torch._foreach_mul_(self._params, self._keep)

    def clear_optimizer_state_(self, optimizer: Optimizer) -> None:
        """Zeroes ``optimizer``'s per-weight state at pruned positions.

        See :func:`clear_pruned_optimizer_state_`.
        """
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        keep_by_param = {id(p): self.mask[name] for name, p in zip(self.mask, self._params)}
        _clear_state(optimizer, keep_by_param)

    def _refresh(self) -> None:
        for index, (name, param) in enumerate(zip(self.mask, self._params)):
            keep = self._keep[index]
            if keep.device != param.device or keep.dtype != param.dtype:
                self._keep[index] = self._keep_factor(name, param)

    def _keep_factor(self, name: str, param: Tensor) -> Tensor:
        return self.mask[name].to(device=param.device, dtype=param.dtype)


def zero_pruned_gradients_(mask: PruningMask, model: nn.Module) -> None:
    """Zeroes the gradients of pruned weights in place.

    Call after ``backward`` and AMP unscaling, before gradient clipping and ``optimizer.step()``.
    Pruned entries become exactly ``+0.0``, also where the gradient was inf or NaN.

    Args:
        mask: The pruning mask.
        model: The network; parameters without a gradient are skipped.

    Raises:
        ValueError: If the mask does not fit the model.
    """
    for param, pruned in _masked_params(mask, model):
        if param.grad is not None:
            param.grad.masked_fill_(pruned, 0)


def zero_pruned_weights_(mask: PruningMask, model: nn.Module) -> None:
    """Zeroes the pruned weights in place; call after ``optimizer.step()``.

    Args:
        mask: The pruning mask.
        model: The network.

    Raises:
        ValueError: If the mask does not fit the model.
    """
    with torch.no_grad():
        for param, pruned in _masked_params(mask, model):
            param.masked_fill_(pruned, 0)


def clear_pruned_optimizer_state_(optimizer: Optimizer, model: nn.Module, mask: PruningMask) -> None:
    """Zeroes the optimizer's per-weight state at pruned positions; call right after pruning.

    For every parameter of ``optimizer`` that ``mask`` covers, each state tensor with the
    parameter's shape (SGD ``momentum_buffer``; Adam/AdamW ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``; likewise RMSprop, Adagrad, ...) is zeroed where the mask prunes, so
    momentum accumulated before pruning cannot move a pruned weight. Scalars such as Adam's
    ``step`` are left alone. Parameters the optimizer has no state for yet are skipped.

    Args:
        optimizer: The optimizer training ``model``.
        model: The network.
        mask: The pruning mask.

    Raises:
        TypeError: If ``optimizer`` is not a ``torch.optim.Optimizer``.
        ValueError: If the mask does not fit the model.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    mask.validate(model)
    named = dict(model.named_parameters())
    _clear_state(optimizer, {id(named[name]): keep for name, keep in mask.items()})


def _clear_state(optimizer: Optimizer, keep_by_param: dict[int, Tensor]) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            keep = keep_by_param.get(id(param))
            state = optimizer.state.get(param)
            if keep is None or not state:
                continue
            for key, value in state.items():
                if key != "step" and isinstance(value, Tensor) and value.shape == param.shape:
                    value.masked_fill_(~keep.to(value.device), 0)


def _masked_params(mask: PruningMask, model: nn.Module) -> list[tuple[nn.Parameter, Tensor]]:
    if not isinstance(mask, PruningMask):
        raise TypeError(f"mask must be a PruningMask, got {type(mask).__name__}")
    mask.validate(model)
    named = dict(model.named_parameters())
    return [(named[name], ~keep.to(named[name].device)) for name, keep in mask.items()]
