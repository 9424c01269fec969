"""Regression channel pruning of a whole network, layer by layer (He et al., 2017).

For each prunable layer in network order: calibration pairs from the network pruned so far and
the original one (:mod:`.calibration`), LASSO channel selection (:mod:`.lasso`), least-squares
reconstruction (:mod:`.reconstruction`), then surgery: the pruned input channels of the layer and
the producer's output channels, batch norm entries and bias go through
:func:`~lit_prune.pruning.channel_surgery.shrink_groups_` (group of
:func:`~lit_prune.pruning.channel_groups.prunable_groups`), so the result is a replayable surgery
history; the refitted weights are then copied into the shrunken layer.

Per layer the relative feature-map error ``‖Y − Ŷ‖² / ‖Y‖²`` on the calibration pairs is
reported for the layer as it came (all channels), after naive removal (kept channels, original
weights), for the LASSO approximation (kept channels scaled by ``β``) and after reconstruction;
the reconstruction can only lower the last two (both are feasible points of the least-squares
problem). He, Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural Networks".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.parameters import parameter_count
from lit_prune.pruning.regression_pruning.calibration import collect_calibration_data
from lit_prune.pruning.regression_pruning.lasso import lasso_channel_selection
from lit_prune.pruning.regression_pruning.layers import (
    RegressionLayer,
    kept_channel_count,
    regression_conv,
    regression_layers,
    resolve_channel_ratios,
)
from lit_prune.pruning.regression_pruning.reconstruction import least_squares_reconstruction, reconstruction_error

__all__ = ["LayerPruningResult", "RegressionPruningResult", "regression_channel_prune_"]


@dataclass(frozen=True)
class LayerPruningResult:
    """What pruning one layer did; errors are relative squared errors ``‖Y − Ŷ‖² / ‖Y‖²``.

    Attributes:
        layer: The convolution whose input channels were pruned.
        group: The channel group that was shrunk.
        channels: Input channels before pruning.
        kept: Input channels kept.
        keep: Their indices (before pruning).
        samples: Calibration positions ``N``.
        lam: ``λ`` of the selection.
        exact: Whether the LASSO hit the channel count exactly.
        lasso_fits: LASSO problems solved.
        error_before: Error of the layer as it came (all channels, its weights), due to the
            layers pruned before it.
        error_naive: Error with the pruned channels simply removed.
        error_lasso: Error of the LASSO approximation (kept channels scaled by ``β``).
        error_reconstructed: Error after least-squares reconstruction.
        collect_seconds: Time to gather the calibration pairs.
        selection_seconds: Time of the LASSO selection.
        reconstruction_seconds: Time of the least-squares reconstruction and the surgery.
    """

    layer: str
    group: str
    channels: int
    kept: int
    keep: list[int]
    samples: int
    lam: float
    exact: bool
    lasso_fits: int
    error_before: float
    error_naive: float
    error_lasso: float
    error_reconstructed: float
    collect_seconds: float
    selection_seconds: float
    reconstruction_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Returns the fields as a JSON-serialisable dictionary."""
        return asdict(self)


@dataclass(frozen=True)
class RegressionPruningResult:
    """What :func:`regression_channel_prune_` did to a network.

    Attributes:
        layers: One result per pruned layer, in the order they were pruned.
        keep: Channel group name to the kept channel indices (relative to the widths before the
            call): the argument for ``shrink_groups_`` or ``ImageClassifier.apply_surgery``
            that reproduces the shapes on another copy of the network.
        params_before: Parameters of the network before pruning.
        params_after: Parameters after pruning.
    """

    layers: list[LayerPruningResult]
    keep: dict[str, list[int]]
    params_before: int
    params_after: int

    @property
    def removed_parameter_fraction(self) -> float:
        """Fraction of the network's parameters that were removed."""
        return 0.0 if self.params_before == 0 else 1.0 - self.params_after / self.params_before

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-serialisable summary: totals, per-layer results and the keep lists."""
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "removed_parameter_fraction": self.removed_parameter_fraction,
            "layers": [layer.to_dict() for layer in self.layers],
            "keep": {name: list(indices) for name, indices in self.keep.items()},
        }


def regression_channel_prune_(
    network: nn.Module,
    reference: nn.Module,
    batches: Sequence[Tensor | Sequence[Tensor]],
    ratios: float | Mapping[str, float],
    positions_per_image: int = 10,
    seed: int = 0,
    max_lasso_fits: int = 40,
    on_layer: Callable[[LayerPruningResult], None] | None = None,
) -> RegressionPruningResult:
    """Prunes ``network`` layer by layer with LASSO selection and least-squares reconstruction.

    He et al., 2017. The prunable layers (:func:`regression_layers`) with a non-zero ratio are
    processed in network order; for each, the calibration pairs come from ``network`` as pruned
    so far and from the untouched ``reference``, the kept channels are chosen by
    :func:`lasso_channel_selection`, their weights refitted by
    :func:`least_squares_reconstruction`, the channel group shrunk with
    :func:`~lit_prune.pruning.channel_surgery.shrink_groups_`, and the refitted weights copied
    in. The result's ``keep`` reproduces the shapes on another copy of the network (e.g.
    through ``ImageClassifier.apply_surgery``, whose history replays on load); its
    ``network.state_dict()`` then loads strictly into that copy.

    Args:
        network: The network to prune, in place; at the widths ``ratios`` refers to.
        reference: The original network (a separate, unpruned copy of the same weights, e.g.
            ``copy.deepcopy(network)`` taken beforehand); it is not modified.
        batches: Calibration images (or ``(images, labels)`` pairs), iterated once per layer.
        ratios: Fraction of input channels to remove, one number or patterns (see
            :func:`resolve_channel_ratios`).
        positions_per_image: Output positions sampled per image (10 in the paper).
        seed: Seed of the position sampling (each layer draws from ``seed`` plus its position).
        max_lasso_fits: Upper bound on the LASSO problems per layer.
        on_layer: Called with each layer's result right after it is pruned (progress, logging).

    Returns:
        Per-layer results, the keep lists and the parameter counts.

    Raises:
        TypeError: If a model is unsupported or an argument has the wrong type.
        ValueError: If ``reference`` is ``network``, a ratio is out of range, ``batches`` is
            empty, or the networks do not match.
    """
    if reference is network:
        raise ValueError(
            "reference must be a separate, unpruned copy of the network (e.g. copy.deepcopy(network) "
            "taken before pruning), not the network being pruned"
        )
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or not batches:
        raise ValueError("batches must be a non-empty list of calibration batches (it is read once per layer)")
    if on_layer is not None and not callable(on_layer):
        raise TypeError(f"on_layer must be callable with a LayerPruningResult, or None; got {on_layer!r}")
    resolved = resolve_channel_ratios(network, ratios)
    regression_layers(reference)
    params_before = parameter_count(network)
    results: list[LayerPruningResult] = []
    keep: dict[str, list[int]] = {}
    for position, (name, layer) in enumerate(regression_layers(network).items()):
        channels = regression_conv(network, name).in_channels
        num_keep = kept_channel_count(channels, resolved[name])
        if num_keep == channels:
            continue
        layer_result = _prune_layer_(
            network, reference, layer, batches, num_keep, positions_per_image, seed + position, max_lasso_fits
        )
        results.append(layer_result)
        keep[layer.group] = list(layer_result.keep)
        if on_layer is not None:
            on_layer(layer_result)
    return RegressionPruningResult(
        layers=results, keep=keep, params_before=params_before, params_after=parameter_count(network)
    )


def _prune_layer_(
    network: nn.Module,
    reference: nn.Module,
    layer: RegressionLayer,
    batches: Sequence[Tensor | Sequence[Tensor]],
    num_keep: int,
    positions_per_image: int,
    seed: int,
    max_lasso_fits: int,
) -> LayerPruningResult:
    start = time.perf_counter()
    data = collect_calibration_data(network, reference, layer.name, batches, positions_per_image, seed)
    conv = regression_conv(network, layer.name)
    weight = conv.weight.detach()
    bias = None if conv.bias is None else conv.bias.detach()
    collected = time.perf_counter()
    selection = lasso_channel_selection(data, weight, bias, num_keep, max_lasso_fits)
    selected = time.perf_counter()
    new_weight, new_bias = least_squares_reconstruction(data, weight, bias, selection.keep)
    beta = torch.tensor(selection.coefficients, dtype=weight.dtype, device=weight.device)
    scaled = (weight * beta[None, :, None, None])[:, selection.keep]
    errors = {
        "error_before": reconstruction_error(data, weight, bias),
        "error_naive": reconstruction_error(data, weight[:, selection.keep], bias, selection.keep),
        "error_lasso": reconstruction_error(data, scaled, bias, selection.keep),
        "error_reconstructed": reconstruction_error(data, new_weight, new_bias, selection.keep),
    }
    shrink_groups_(network, {layer.group: selection.keep}, kinds=("channels",))
    conv = regression_conv(network, layer.name)
    with torch.no_grad():
        conv.weight.copy_(new_weight)
        if new_bias is not None:
            conv.bias.copy_(new_bias)
    done = time.perf_counter()
    return LayerPruningResult(
        layer=layer.name,
        group=layer.group,
        channels=weight.shape[1],
        kept=len(selection.keep),
        keep=list(selection.keep),
        samples=data.samples,
        lam=selection.lam,
        exact=selection.exact,
        lasso_fits=selection.fits,
        collect_seconds=collected - start,
        selection_seconds=selected - collected,
        reconstruction_seconds=done - selected,
        **errors,
    )
