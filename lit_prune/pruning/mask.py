"""The pruning mask: which weights of which parameters are kept.

A :class:`PruningMask` maps plain parameter names, exactly as ``model.named_parameters()``
spells them (``layer1.0.conv1.weight``), to boolean tensors of the parameter's shape where
``True`` means *kept* and ``False`` means *pruned*. It is immutable: every operation that
changes the kept set (pruning, intersection, moving devices) returns a new mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

__all__ = ["PruningMask"]


class PruningMask(Mapping[str, Tensor]):
    """Immutable mapping of parameter name to a boolean keep-mask (``True`` = kept).

    Args:
        masks: Parameter name to boolean tensor. The tensors are not copied and are never
            modified in place by this class.

    Raises:
        ValueError: If ``masks`` is empty.
        TypeError: If a key is not a string or a value is not a ``torch.bool`` tensor.
    """

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        if not isinstance(masks, Mapping):
            raise TypeError(f"PruningMask needs a mapping of parameter name to bool tensor, got {type(masks).__name__}")
        if len(masks) == 0:
            raise ValueError("PruningMask needs at least one parameter; got an empty mapping")
        for name, mask in masks.items():
            _check_entry(name, mask)
        self._masks: dict[str, Tensor] = dict(masks)

    @classmethod
    def ones_like(cls, params: Mapping[str, Tensor]) -> PruningMask:
        """Builds a mask that keeps every weight of ``params``.

        Args:
            params: Parameter name to tensor (e.g. the result of ``prunable_parameters``).

        Returns:
            An all-``True`` mask on each parameter's device.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping of name to tensor, got {type(params).__name__}")
        for name, param in params.items():
            if not isinstance(param, Tensor):
                raise TypeError(f"params[{name!r}] must be a tensor, got {type(param).__name__}")
        return cls({name: torch.ones(p.shape, dtype=torch.bool, device=p.device) for name, p in params.items()})

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> PruningMask:
        """Rebuilds a mask saved with :meth:`state_dict`.

        Args:
            state: Parameter name to boolean tensor.

        Returns:
            The mask, on the CPU.

        Raises:
            TypeError: If a value is not a boolean tensor.
            ValueError: If ``state`` is empty.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"a mask state dict must be a mapping of name to bool tensor, got {type(state).__name__}")
        for name, mask in state.items():
            _check_entry(name, mask)
        return cls({name: mask.detach().cpu().clone() for name, mask in state.items()})

    def __getitem__(self, name: str) -> Tensor:
        return self._masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._masks)

    def __len__(self) -> int:
        return len(self._masks)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PruningMask):
            return NotImplemented
        return self.equals(other)

    def __repr__(self) -> str:
        return (
            f"PruningMask({len(self)} parameters, {self.num_pruned()}/{self.num_total()} pruned, "
            f"sparsity={self.sparsity():.4f})"
        )

    def equals(self, other: PruningMask) -> bool:
        """Tells whether both masks name the same parameters with identical keep-masks.

        Devices may differ; only names, shapes and values are compared.

        Args:
            other: The mask to compare with.

        Returns:
            ``True`` when names, shapes and every entry agree.
        """
        if not isinstance(other, PruningMask):
            raise TypeError(f"can only compare with a PruningMask, got {type(other).__name__}")
        if self.keys() != other.keys():
            return False
        for name, mask in self._masks.items():
            theirs = other[name]
            if mask.shape != theirs.shape or not torch.equal(mask, theirs.to(mask.device)):
                return False
        return True

    def num_total(self) -> int:
        """Returns the number of weights covered by the mask (kept and pruned)."""
        return sum(mask.numel() for mask in self._masks.values())

    def num_kept(self) -> int:
        """Returns the number of kept weights."""
        return sum(int(mask.count_nonzero()) for mask in self._masks.values())

    def num_pruned(self) -> int:
        """Returns the number of pruned weights."""
        return self.num_total() - self.num_kept()

    def sparsity(self) -> float:
        """Returns the fraction of covered weights that are pruned, over all parameters."""
        total = self.num_total()
        return self.num_pruned() / total if total else 0.0

    def layer_sparsity(self) -> dict[str, float]:
        """Returns each parameter's fraction of pruned weights, keyed by parameter name."""
        return {
            name: 1.0 - int(mask.count_nonzero()) / mask.numel() if mask.numel() else 0.0
            for name, mask in self._masks.items()
        }

    def validate(self, model: nn.Module) -> None:
        """Checks that every masked parameter exists in ``model`` with the mask's shape.

        Args:
            model: The network whose ``named_parameters()`` the mask refers to.

        Raises:
            ValueError: If a name is not a parameter of ``model`` or a shape differs.
        """
        params = dict(model.named_parameters())
        for name, mask in self._masks.items():
            if name not in params:
                raise ValueError(
                    f"mask names parameter {name!r}, which {type(model).__name__} does not have; "
                    f"its parameters are: {', '.join(params)}"
                )
            if params[name].shape != mask.shape:
                raise ValueError(
                    f"mask for parameter {name!r} has shape {tuple(mask.shape)} but the model's "
                    f"parameter has shape {tuple(params[name].shape)}"
                )

    def apply_(self, model: nn.Module) -> nn.Module:
        """Zeroes the pruned weights of ``model`` in place.

        Pruned entries are set to exactly ``+0.0`` (also where they held NaN or inf).

        Args:
            model: The network to prune.

        Returns:
            ``model``, for chaining.

        Raises:
            ValueError: If the mask does not fit ``model`` (see :meth:`validate`).
        """
        self.validate(model)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, mask in self._masks.items():
                param = params[name]
                param.masked_fill_(~mask.to(param.device), 0)
        return model

    def state_dict(self) -> dict[str, Tensor]:
        """Returns the mask as parameter name to boolean CPU tensor (a copy), for checkpoints."""
        return {name: mask.detach().cpu().clone() for name, mask in self._masks.items()}

    def to(self, device: torch.device | str) -> PruningMask:
        """Returns the mask with every tensor on ``device``.

        Args:
            device: Target device.

        Returns:
            A new mask (``self`` when nothing needs to move).
        """
        device = torch.device(device)
        if all(mask.device == device for mask in self._masks.values()):
            return self
        return PruningMask({name: mask.to(device) for name, mask in self._masks.items()})

    def intersect(self, other: PruningMask) -> PruningMask:
        """Combines two masks so that a weight is kept only if both masks keep it.

        A parameter that only one mask names is taken from that mask (the other keeps all of
        it), so the result never keeps a weight that either mask prunes: masks only shrink.

        Args:
            other: The mask to combine with.

        Returns:
            A new mask on ``self``'s devices for shared names.

        Raises:
            TypeError: If ``other`` is not a :class:`PruningMask`.
            ValueError: If a parameter present in both has different shapes.
        """
        if not isinstance(other, PruningMask):
            raise TypeError(f"can only intersect with a PruningMask, got {type(other).__name__}")
        combined = dict(self._masks)
        for name, theirs in other.items():
            if name not in combined:
                combined[name] = theirs
                continue
            ours = combined[name]
            if ours.shape != theirs.shape:
                raise ValueError(
                    f"cannot intersect masks for parameter {name!r}: shapes {tuple(ours.shape)} "
                    f"and {tuple(theirs.shape)} differ"
                )
            combined[name] = ours & theirs.to(ours.device)
        return PruningMask(combined)


def _check_entry(name: object, mask: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"mask keys must be parameter names (str), got {type(name).__name__}")
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask for {name!r} must be a bool tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask for {name!r} must have dtype torch.bool (True = kept), got {mask.dtype}")
