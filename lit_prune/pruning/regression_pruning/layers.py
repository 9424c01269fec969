"""Which convolutions regression pruning thins, and how many input channels each keeps.

The prunable layers are every convolution of a :class:`~lit_prune.models.CifarVGG` after the
first (whose input is the image; the last convolution's outputs feed the classifier, a linear
layer, and stay) and, for ResNets with basic blocks, the second convolution of every block (its
inputs are the block-internal channels ``layerK.I.conv1``; residual streams are not pruned this
way). Removing input channels of a layer removes the matching output channels of the layer that
produces them (He, Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural
Networks").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn
from torchvision.models import ResNet

from lit_prune.errors import UserError, UserTypeError
from lit_prune.models.cifar_resnet import CifarResNet
from lit_prune.models.vgg import CifarVGG
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.sensitivity import SensitivityResult, allocate_layer_sparsity
from lit_prune.validation import check_fraction

__all__ = [
    "REGRESSION_SUPPORTED_ARCHITECTURES",
    "RegressionLayer",
    "channel_ratios_from_sensitivity",
    "check_channel_ratio",
    "kept_channel_count",
    "regression_conv",
    "regression_layers",
    "resolve_channel_ratios",
]

REGRESSION_SUPPORTED_ARCHITECTURES: tuple[str, ...] = (
    "CifarVGG (vgg16_bn): every convolution after the first",
    "CifarResNet (resnet20/32/56) and torchvision ResNet with BasicBlock (resnet18): conv2 of every block",
)
"""The networks and layers :func:`regression_layers` knows."""

_SUPPORTED_TYPES = (CifarVGG, CifarResNet, ResNet)


@dataclass(frozen=True)
class RegressionLayer:
    """A convolution whose input channels regression pruning can remove.

    Attributes:
        name: The convolution, e.g. ``features.3`` or ``layer1.0.conv2``.
        group: The channel group of its input channels (named after their producer, e.g.
            ``features.0`` or ``layer1.0.conv1``), as used by the surgery and its history.
    """

    name: str
    group: str


def regression_layers(model: nn.Module) -> dict[str, RegressionLayer]:
    """Lists the convolutions whose input channels regression pruning can remove.

    Args:
        model: A :class:`~lit_prune.models.CifarVGG`, :class:`~lit_prune.models.CifarResNet` or
            torchvision ``ResNet`` with basic blocks.

    Returns:
        Convolution name to layer, in network order (the order they are pruned in).

    Raises:
        TypeError: If the model is not one of :data:`REGRESSION_SUPPORTED_ARCHITECTURES`.
        ValueError: If a supported class is built in a way the surgery does not handle.
    """
    if not isinstance(model, _SUPPORTED_TYPES):
        raise TypeError(
            f"regression channel pruning does not support {type(model).__name__}; supported networks: "
            f"{'; '.join(REGRESSION_SUPPORTED_ARCHITECTURES)}"
        )
    modules = dict(model.named_modules())
    layers: dict[str, RegressionLayer] = {}
    for group in prunable_groups(model, include_residual=False, kinds=("channels",)).values():
        consumers = [s for s in group.slices if s.role == "consumer"]
        if len(consumers) == 1 and isinstance(modules[consumers[0].module], nn.Conv2d):
            layers[consumers[0].module] = RegressionLayer(name=consumers[0].module, group=group.name)
    return layers


def check_channel_ratio(value: object, name: str) -> float:
    """Accepts the fraction of a layer's input channels to remove, in ``[0, 1)``.

    Raises:
        UserTypeError: If ``value`` is not a number.
        UserError: If it lies outside ``[0, 1)``.
    """
    return check_fraction(value, name, meaning="the fraction of input channels to remove")


def resolve_channel_ratios(model: nn.Module, ratios: float | Mapping[str, float]) -> dict[str, float]:
    """Turns one ratio or name patterns to ratios into a ratio for every prunable layer.

    Args:
        model: A network supported by :func:`regression_layers`.
        ratios: The fraction of input channels to remove, in ``[0, 1)``: one number for every
            prunable layer, or ``fnmatch`` patterns over the prunable convolutions' names
            (``features.2*``, ``layer3.*``) to fractions; patterns apply in order, a later match
            overrides an earlier one, and unmatched layers keep every channel.

    Returns:
        Prunable layer name (network order) to the fraction of its input channels to remove.

    Raises:
        TypeError: If ``ratios`` is neither a number nor a mapping of strings to numbers.
        ValueError: If a ratio is outside ``[0, 1)`` or a pattern matches no prunable layer
            (the message lists the layers).
    """
    layers = regression_layers(model)
    if isinstance(ratios, Mapping):
        if not ratios:
            raise UserError("ratios must name at least one layer pattern, or be a single number")
        resolved = dict.fromkeys(layers, 0.0)
        for pattern, ratio in ratios.items():
            if not isinstance(pattern, str):
                raise UserTypeError(f"ratio patterns must be strings, got {pattern!r}")
            value = check_channel_ratio(ratio, f"ratios[{pattern!r}]")
            matched = [name for name in layers if fnmatchcase(name, pattern)]
            if not matched:
                raise UserError(
                    f"ratio pattern {pattern!r} matches no prunable layer of {type(model).__name__}; "
                    f"prunable layers (convolutions whose input channels are pruned): {', '.join(layers)}"
                )
            for name in matched:
                resolved[name] = value
        return resolved
    value = check_channel_ratio(ratios, "ratio")
    return dict.fromkeys(layers, value)


def channel_ratios_from_sensitivity(
    model: nn.Module, result: SensitivityResult, target_sparsity: float
) -> dict[str, float]:
    """Derives per-layer channel ratios from a sensitivity sweep.

    The sweep's curves of the prunable convolutions' weights (``features.3.weight``) are
    handed to :func:`~lit_prune.pruning.sensitivity.allocate_layer_sparsity`, which spreads
    ``target_sparsity`` of their weights over the layers where the predicted loss is least; the
    fraction allocated to a layer's weight becomes the fraction of its input channels removed
    (removing a fraction of input channels removes that fraction of the layer's weights). The
    curves measure unstructured pruning, so this is a ranking heuristic of layer sensitivity,
    as in He et al., 2017 (Sec. 4.1, which picks per-layer widths from single-layer pruning).

    Args:
        model: A network supported by :func:`regression_layers`.
        result: A sensitivity sweep of the model (e.g. ``SensitivityResult.from_dict`` of a
            ``sensitivity.json``); it must have a curve for every prunable convolution's weight.
        target_sparsity: Fraction of the prunable convolutions' weights to allocate, in ``[0, 1)``.

    Returns:
        Prunable layer name to the fraction of its input channels to remove.

    Raises:
        TypeError: If ``result`` is not a :class:`SensitivityResult`.
        ValueError: If a curve is missing or the target is out of range (see
            :func:`allocate_layer_sparsity`).
    """
    if not isinstance(result, SensitivityResult):
        raise TypeError(f"result must be a SensitivityResult, got {type(result).__name__}")
    layers = regression_layers(model)
    weights = {f"{name}.weight": name for name in layers}
    missing = [name for name in weights if name not in result.curves]
    if missing:
        raise ValueError(
            f"the sensitivity result has no curve for {', '.join(missing)}; it must cover every prunable "
            f"convolution's weight ({', '.join(weights)}); its layers are: {', '.join(result.curves)}"
        )
    subset = SensitivityResult(
        curves={name: result.curves[name] for name in weights},
        baseline=result.baseline,
        param_counts={name: result.param_counts[name] for name in weights},
        current_sparsity={name: result.current_sparsity[name] for name in weights},
        metric=result.metric,
    )
    allocation = allocate_layer_sparsity(subset, target_sparsity)
    return {layer: allocation[weight] for weight, layer in weights.items()}


def kept_channel_count(channels: int, ratio: float) -> int:
    """Input channels kept when removing ``ratio`` of ``channels`` (rounded, at least one)."""
    return max(1, channels - round(check_channel_ratio(ratio, "ratio") * channels))


def regression_conv(model: nn.Module, name: str) -> nn.Conv2d:
    """The convolution ``name`` of ``model``, checked to be one regression pruning can thin.

    Raises:
        ValueError: If there is no such layer, or it is grouped or not zero-padded.
        TypeError: If the layer is not a ``Conv2d``.
    """
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no layer {name!r}") from None
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"{name!r} must be a Conv2d for regression pruning, found {type(module).__name__}")
    if module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str):
        raise ValueError(
            f"{name!r} must be an ungrouped convolution with numeric zero padding, got groups={module.groups}, "
            f"padding={module.padding!r}, padding_mode={module.padding_mode!r}"
        )
    return module
