"""Regression-based channel pruning: LASSO channel selection and least-squares reconstruction.

He, Zhang & Sun, 2017, "Channel Pruning for Accelerating Very Deep Neural Networks" (ICCV).
A convolution ``L`` with weights ``W`` (``n x c x kh x kw``) is thinned by removing some of its
*input* channels, together with the matching output channels (and batch-norm entries) of the
layer that produces them, while its output feature map is kept as close as possible to the one
of the original network:

1. **Calibration pairs.** Images are passed through the network pruned so far and through the
   original, unpruned network. The input of ``L`` in the pruned network is unfolded into patches
   (``torch.nn.functional.unfold``) at a few randomly sampled output positions per image, giving
   ``X`` (``N x c·kh·kw``); the output of ``L`` in the original network at the same positions
   gives the target ``Y`` (``N x n``). Errors of earlier layers are therefore compensated, as
   in the paper.
2. **Channel selection (LASSO).** With ``Z_i = X_i W_iᵀ`` the contribution of input channel
   ``i`` to the output, the coefficients ``β`` solve
   ``min_β 1/(2N) ‖Y − b − Σ_i β_i Z_i‖²_F + λ‖β‖₁`` (``b`` the current bias, ``β ≥ 0``: a
   coefficient scales its channel). ``λ`` is bisected (log scale) until exactly the requested
   number of channels keep a non-zero coefficient; where the support jumps over that number
   (ties, plateaus), the channels with the largest ``|β|`` at the closest ``λ`` with more
   non-zeros are kept. scikit-learn's ``Lasso`` solves each problem. It is handed an
   equivalent problem of ``c`` rows: with ``A = [vec Z_1 … vec Z_c]`` and the Cholesky factor
   ``AᵀA = LLᵀ``, ``R = Lᵀ`` and ``r = L⁻¹Aᵀy`` give ``‖y − Aβ‖² = ‖r − Rβ‖² + const``;
   ``AᵀA`` and ``Aᵀy`` come from ``XᵀX``, ``XᵀY`` and ``WᵀW`` without ever forming the
   ``N·n x c`` matrix ``A``.
3. **Reconstruction.** The kept channels' weights (and the bias) are refitted by least squares,
   ``min ‖Y − X′W′ᵀ − b′‖`` with ``torch.linalg.lstsq`` (float64, rank-revealing ``gelsy``
   driver on the CPU), and reshaped back into the convolution.
4. **Surgery.** The pruned input channels of ``L`` and the producer's output channels, batch
   norm entries and bias go through :func:`~lit_prune.pruning.channel_surgery.shrink_groups_`
   (group of :func:`~lit_prune.pruning.channel_groups.prunable_groups`), so the result is a
   replayable surgery history; the refitted weights are then copied into the shrunken layer.

Layers are processed in network order, each on inputs produced by the network already pruned
before it. The prunable layers (:func:`regression_layers`) are every convolution of a
:class:`~lit_prune.models.CifarVGG` after the first (whose input is the image; the last
convolution's outputs feed the classifier, a linear layer, and stay) and, for ResNets with
basic blocks, the second convolution of every block (its inputs are the block-internal channels
``layerK.I.conv1``; residual streams are not pruned this way).

Per layer the relative feature-map error ``‖Y − Ŷ‖² / ‖Y‖²`` on the calibration pairs is
reported for the layer as it came (all channels), after naive removal (kept channels, original
weights), for the LASSO approximation (kept channels scaled by ``β``) and after reconstruction;
the reconstruction can only lower the last two (both are feasible points of the least-squares
problem).

Nothing here imports Lightning.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso
from torch import Tensor, nn
from torchvision.models import ResNet

from lit_prune.models.cifar_resnet import CifarResNet
from lit_prune.models.vgg import CifarVGG
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.sensitivity import SensitivityResult, allocate_layer_sparsity

__all__ = [
    "REGRESSION_SUPPORTED_ARCHITECTURES",
    "CalibrationData",
    "LassoSelection",
    "LayerPruningResult",
    "RegressionLayer",
    "RegressionPruningResult",
    "channel_ratios_from_sensitivity",
    "collect_calibration_data",
    "kept_channel_count",
    "lasso_channel_selection",
    "least_squares_reconstruction",
    "reconstruction_error",
    "regression_channel_prune_",
    "regression_layers",
    "resolve_channel_ratios",
]

REGRESSION_SUPPORTED_ARCHITECTURES: tuple[str, ...] = (
    "CifarVGG (vgg16_bn): every convolution after the first",
    "CifarResNet (resnet20/32/56) and torchvision ResNet with BasicBlock (resnet18): conv2 of every block",
)
"""The networks and layers :func:`regression_layers` knows."""

_SUPPORTED_TYPES = (CifarVGG, CifarResNet, ResNet)
_RELATIVE_JITTER = 1e-10
_LOWEST_LAMBDA_FACTOR = 1e-9
_LAMBDA_RELATIVE_RESOLUTION = 1e-6


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


@dataclass(frozen=True)
class CalibrationData:
    """Input patches and target outputs of one convolution at sampled output positions.

    Attributes:
        inputs: ``X``, shape ``(N, c·kh·kw)``: the unfolded input of the layer in the network
            pruned so far, channel-major like ``weight.reshape(n, -1)``.
        targets: ``Y``, shape ``(N, n)``: the layer's output (with its bias) in the original
            network at the same positions.
    """

    inputs: Tensor
    targets: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or not isinstance(self.targets, Tensor):
            raise TypeError("inputs and targets must be tensors")
        if self.inputs.dim() != 2 or self.targets.dim() != 2 or self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(
                f"inputs (N, c·kh·kw) and targets (N, n) must be matrices with the same number of rows, got "
                f"{tuple(self.inputs.shape)} and {tuple(self.targets.shape)}"
            )
        if self.inputs.shape[0] == 0:
            raise ValueError("calibration data must hold at least one sample")
        object.__setattr__(self, "inputs", self.inputs.detach())
        object.__setattr__(self, "targets", self.targets.detach())

    @property
    def samples(self) -> int:
        """The number of sampled positions ``N``."""
        return int(self.inputs.shape[0])


@dataclass(frozen=True)
class LassoSelection:
    """The outcome of :func:`lasso_channel_selection`.

    Attributes:
        keep: Sorted indices of the kept input channels.
        coefficients: ``β`` of every input channel at the chosen ``λ``.
        lam: The chosen ``λ`` in the scaling of the paper's objective (``0`` when nothing was
            pruned).
        exact: Whether the LASSO alone left exactly ``len(keep)`` non-zero coefficients
            (``False``: the top ``|β|`` at the closest ``λ`` were taken).
        fits: Number of LASSO problems solved.
    """

    keep: list[int]
    coefficients: list[float]
    lam: float
    exact: bool
    fits: int


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
            raise ValueError("ratios must name at least one layer pattern, or be a single number")
        resolved = dict.fromkeys(layers, 0.0)
        for pattern, ratio in ratios.items():
            if not isinstance(pattern, str):
                raise TypeError(f"ratio patterns must be strings, got {pattern!r}")
            value = _check_ratio(ratio, f"ratios[{pattern!r}]")
            matched = [name for name in layers if fnmatchcase(name, pattern)]
            if not matched:
                raise ValueError(
                    f"ratio pattern {pattern!r} matches no prunable layer of {type(model).__name__}; "
                    f"prunable layers (convolutions whose input channels are pruned): {', '.join(layers)}"
                )
            for name in matched:
                resolved[name] = value
        return resolved
    value = _check_ratio(ratios, "ratio")
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
    return max(1, channels - round(_check_ratio(ratio, "ratio") * channels))


def collect_calibration_data(
    network: nn.Module,
    reference: nn.Module,
    layer: str,
    batches: Iterable[Tensor | Sequence[Tensor]],
    positions_per_image: int = 10,
    seed: int = 0,
) -> CalibrationData:
    """Gathers ``X`` (inputs of ``layer`` in ``network``) and ``Y`` (its outputs in ``reference``).

    Both networks run in evaluation mode without gradients (their modes are restored); a
    forward hook captures the tensor and stops the pass at ``layer``. For every image,
    ``positions_per_image`` output positions are drawn without replacement (all of them when
    the feature map has fewer), the same for ``X`` and ``Y``, from a generator seeded by ``seed``.

    Args:
        network: The network pruned so far.
        reference: The original network (same architecture and output channels at ``layer``).
        layer: Name of a ``Conv2d`` with zero padding present in both.
        batches: Images ``(B, C, H, W)`` or ``(images, labels)`` pairs, ready for the model.
        positions_per_image: Output positions sampled per image, at least 1.
        seed: Seed of the position sampling.

    Returns:
        ``X`` ``(N, c·kh·kw)`` and ``Y`` ``(N, n)`` in float32 on the device of ``network``.

    Raises:
        TypeError: If ``layer`` is not a ``Conv2d`` or a batch holds no tensor.
        ValueError: If the layer shapes disagree, the padding is not zeros, ``positions_per_image``
            is below 1, or ``batches`` is empty.
    """
    positions_per_image = _check_positive_int(positions_per_image, "positions_per_image")
    conv = _conv(network, layer)
    reference_conv = _conv(reference, layer)
    if reference_conv.out_channels != conv.out_channels or reference_conv.kernel_size != conv.kernel_size:
        raise ValueError(
            f"{layer!r} has {conv.out_channels} output channels and kernel {conv.kernel_size} in the network but "
            f"{reference_conv.out_channels} and {reference_conv.kernel_size} in the reference; the reference must be "
            "the original network, pruned no further than this layer's outputs"
        )
    device = conv.weight.device
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = [], []
    with _evaluating(network), _evaluating(reference), torch.no_grad():
        for index, batch in enumerate(batches):
            images = _images(batch, index).to(device)
            patches = F.unfold(
                _captured(network, layer, images, "input"),
                kernel_size=conv.kernel_size,
                dilation=conv.dilation,
                padding=conv.padding,
                stride=conv.stride,
            )
            outputs = _captured(reference, layer, images.to(reference_conv.weight.device), "output").to(device)
            outputs = outputs.flatten(2)
            if outputs.shape[2] != patches.shape[2]:
                raise ValueError(
                    f"{layer!r} gives {outputs.shape[2]} output positions in the reference but "
                    f"{patches.shape[2]} in the network; both must see the same image size"
                )
            count = min(positions_per_image, patches.shape[2])
            chosen = torch.rand(patches.shape[0], patches.shape[2], generator=generator).argsort(dim=1)[:, :count]
            chosen = chosen.to(device)
            inputs.append(patches.gather(2, chosen[:, None, :].expand(-1, patches.shape[1], -1)).transpose(1, 2))
            targets.append(outputs.gather(2, chosen[:, None, :].expand(-1, outputs.shape[1], -1)).transpose(1, 2))
    if not inputs:
        raise ValueError("batches is empty: regression pruning needs at least one calibration batch")
    return CalibrationData(
        inputs=torch.cat(inputs).reshape(-1, inputs[0].shape[2]).float(),
        targets=torch.cat(targets).reshape(-1, targets[0].shape[2]).float(),
    )


def lasso_channel_selection(
    data: CalibrationData,
    weight: Tensor,
    bias: Tensor | None,
    num_keep: int,
    max_fits: int = 40,
) -> LassoSelection:
    """Chooses ``num_keep`` input channels by LASSO regression (He et al., 2017, Eq. 3).

    Solves ``min_β 1/(2N) ‖Y − b − Σ_i β_i X_i W_iᵀ‖²_F + λ‖β‖₁`` with ``β ≥ 0`` for ``λ``
    bisected on a log scale between the smallest value that zeroes every coefficient and
    ``1e-9`` of it, until exactly ``num_keep`` coefficients are non-zero. When no ``λ`` tried
    gives exactly that many (the support jumps over the count at ties, or ``max_fits`` runs
    out), the ``num_keep`` channels with the largest ``|β|`` at the closest ``λ`` with more
    non-zeros are kept. When even the smallest ``λ`` leaves fewer non-zeros (a plateau: channels
    that contribute nothing to the output never get a coefficient), its non-zero channels are
    kept and the rest filled up by ``‖Z_i‖``, then by index.

    Args:
        data: Calibration pairs of the layer.
        weight: The layer's weight ``(n, c, kh, kw)``.
        bias: The layer's bias ``(n,)`` or ``None``.
        num_keep: Channels to keep, in ``[1, c]``.
        max_fits: Upper bound on the LASSO problems solved, at least 2.

    Returns:
        The kept channels, ``β``, ``λ``, whether the count was hit exactly, and the fits used.

    Raises:
        ValueError: If shapes disagree or a count is out of range.
    """
    channels = _check_shapes(data, weight, bias)
    if isinstance(num_keep, bool) or not isinstance(num_keep, int) or not 1 <= num_keep <= channels:
        raise ValueError(f"num_keep must be an integer in [1, {channels}] (the layer's input channels), got {num_keep!r}")
    max_fits = _check_positive_int(max_fits, "max_fits")
    if max_fits < 2:
        raise ValueError(f"max_fits must be at least 2, got {max_fits}")
    if num_keep == channels:
        return LassoSelection(list(range(channels)), [1.0] * channels, 0.0, True, 0)
    gram, correlation = _channel_gram(data, weight, bias)
    design, response = _equivalent_rows(gram, correlation)
    search = _LambdaSearch(design, response, num_keep, data.samples)
    beta, lam, exact = search.run(float(correlation.max()) / data.samples, max_fits)
    if exact:
        keep = sorted(int(i) for i in torch.nonzero(beta).flatten())
    else:
        order = sorted(range(channels), key=lambda i: (-abs(float(beta[i])), -float(gram[i, i]), i))
        keep = sorted(order[:num_keep])
    return LassoSelection(keep, [float(value) for value in beta], lam, exact, search.fits)


def least_squares_reconstruction(
    data: CalibrationData, weight: Tensor, bias: Tensor | None, keep: Sequence[int]
) -> tuple[Tensor, Tensor | None]:
    """Refits the kept input channels' weights (and the bias) to the targets by least squares.

    Minimises ``‖Y − X′W′ᵀ − b′‖_F`` over ``W′`` (and ``b′`` when the layer has a bias) with
    ``torch.linalg.lstsq`` in float64 on the CPU (driver ``gelsy``, which handles rank-deficient
    inputs such as channels that are always zero after a ReLU, and returns the minimum-norm
    solution when there are fewer samples than unknowns). He et al., 2017, Eq. 3, ``W``-step.

    Args:
        data: Calibration pairs of the layer.
        weight: The layer's weight ``(n, c, kh, kw)`` (its shape is used).
        bias: The layer's bias or ``None`` (then no bias is fitted).
        keep: Indices of the kept input channels.

    Returns:
        The new weight ``(n, len(keep), kh, kw)`` and bias, in the dtype and on the device of
        ``weight``.

    Raises:
        ValueError: If shapes disagree or ``keep`` is invalid.
    """
    channels = _check_shapes(data, weight, bias)
    kept = _check_channel_indices(keep, channels)
    design = _kept_columns(data.inputs, kept, _kernel_size(weight)).cpu().double()
    if bias is not None:
        design = torch.cat([design, torch.ones(design.shape[0], 1, dtype=design.dtype)], dim=1)
    solution = torch.linalg.lstsq(design, data.targets.cpu().double(), driver="gelsy").solution
    columns = len(kept) * _kernel_size(weight)
    new_weight = solution[:columns].T.reshape(weight.shape[0], len(kept), *weight.shape[2:])
    new_bias = None if bias is None else solution[columns].to(dtype=bias.dtype, device=bias.device)
    return new_weight.to(dtype=weight.dtype, device=weight.device), new_bias


def reconstruction_error(
    data: CalibrationData, weight: Tensor, bias: Tensor | None, keep: Sequence[int] | None = None
) -> float:
    """Relative squared error ``‖Y − X_keep Wᵀ − b‖² / ‖Y‖²`` of a layer on calibration pairs.

    Args:
        data: Calibration pairs.
        weight: Weight over the channels used: ``(n, len(keep), kh, kw)``, or ``(n, c, kh, kw)``
            when ``keep`` is ``None``.
        bias: Bias or ``None``.
        keep: Input channels of ``data`` that ``weight`` reads; ``None`` for all.

    Returns:
        The relative error (``0`` for a perfect fit; ``inf`` if the targets are all zero and
        the fit is not).
    """
    kernel = _kernel_size(weight)
    inputs = data.inputs if keep is None else _kept_columns(data.inputs, list(keep), kernel)
    if inputs.shape[1] != weight[0].numel():
        raise ValueError(
            f"weight reads {weight.shape[1]} channels of kernel {tuple(weight.shape[2:])} but the inputs "
            f"provide {inputs.shape[1] // kernel} channels"
        )
    targets = data.targets
    prediction = inputs @ weight.reshape(weight.shape[0], -1).to(inputs).T
    if bias is not None:
        prediction = prediction + bias.to(prediction)
    residual = float((targets.double() - prediction.double()).square().sum())
    scale = float(targets.double().square().sum())
    if scale == 0.0:
        return 0.0 if residual == 0.0 else math.inf
    return residual / scale


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
    params_before = _parameter_count(network)
    results: list[LayerPruningResult] = []
    keep: dict[str, list[int]] = {}
    for position, (name, layer) in enumerate(regression_layers(network).items()):
        channels = _conv(network, name).in_channels
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
        layers=results, keep=keep, params_before=params_before, params_after=_parameter_count(network)
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
    conv = _conv(network, layer.name)
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
    conv = _conv(network, layer.name)
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


class _LambdaSearch:
    """Bisects the LASSO penalty for a support of exactly ``num_keep`` channels."""

    def __init__(self, design: Tensor, response: Tensor, num_keep: int, samples: int) -> None:
        self.design = design.numpy()
        self.response = response.numpy()
        self.num_keep = num_keep
        self.alpha_per_lambda = samples / design.shape[0]
        self.channels = design.shape[1]
        self.fits = 0
        self._solver = Lasso(
            fit_intercept=False, positive=True, precompute=True, max_iter=10000, tol=1e-8
        )

    def run(self, lam_max: float, max_fits: int) -> tuple[Tensor, float, bool]:
        """Returns ``(β, λ, exact)``: the support of exactly ``num_keep`` or the closest larger one."""
        if lam_max <= 0.0:
            return torch.zeros(self.channels, dtype=torch.float64), 0.0, False
        high = lam_max
        low = lam_max * _LOWEST_LAMBDA_FACTOR
        beta = self._solve(low)
        if self._count(beta) <= self.num_keep:
            return beta, low, self._count(beta) == self.num_keep
        best_low = (beta, low)
        while self.fits < max_fits:
            if high / low < 1.0 + _LAMBDA_RELATIVE_RESOLUTION:
                break
            middle = math.sqrt(low * high)
            beta = self._solve(middle)
            count = self._count(beta)
            if count == self.num_keep:
                return beta, middle, True
            if count > self.num_keep:
                low, best_low = middle, (beta, middle)
            else:
                high = middle
        return best_low[0], best_low[1], False

    def _solve(self, lam: float) -> Tensor:
        self._solver.set_params(alpha=lam * self.alpha_per_lambda)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._solver.fit(self.design, self.response)
        self.fits += 1
        return torch.from_numpy(self._solver.coef_.copy())

    @staticmethod
    def _count(beta: Tensor) -> int:
        return int(torch.count_nonzero(beta))


def _channel_gram(data: CalibrationData, weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """``AᵀA`` (``c x c``) and ``Aᵀy`` (``c``) of the LASSO, in float64 on the CPU.

    ``<Z_i, Z_j> = Σ (X_iᵀX_j) ⊙ (W_iᵀW_j)`` and ``<Z_i, Y − b> = Σ (X_iᵀ(Y − b)) ⊙ W_iᵀ``.
    """
    channels, kernel = weight.shape[1], _kernel_size(weight)
    flat = weight.reshape(weight.shape[0], -1).to(data.inputs)
    targets = data.targets if bias is None else data.targets - bias.to(data.targets)
    inputs_gram = data.inputs.T @ data.inputs
    weight_gram = flat.T @ flat
    gram = (inputs_gram * weight_gram).reshape(channels, kernel, channels, kernel).sum(dim=(1, 3), dtype=torch.float64)
    correlation = ((data.inputs.T @ targets) * flat.T).reshape(channels, -1).sum(dim=1, dtype=torch.float64)
    if not bool(torch.isfinite(gram).all()) or not bool(torch.isfinite(correlation).all()):
        raise ValueError(
            "the calibration data or the layer's weights hold NaN or infinite values; regression pruning needs a "
            "network whose feature maps are finite"
        )
    return gram.cpu(), correlation.cpu()


def _equivalent_rows(gram: Tensor, correlation: Tensor) -> tuple[Tensor, Tensor]:
    """``R`` and ``r`` with ``RᵀR = AᵀA + εI`` and ``Rᵀr = Aᵀy`` (Cholesky, ``R = Lᵀ``, ``r = L⁻¹Aᵀy``).

    ``ε`` is ``1e-10`` of the largest diagonal entry (raised tenfold until the factorisation
    succeeds): a ridge far below the LASSO penalties searched, which makes the factorisation
    exist for channels that contribute nothing (zero rows and columns of ``AᵀA``).
    """
    scale = float(gram.diagonal().max()) if gram.numel() else 0.0
    if scale <= 0.0:
        return torch.zeros(1, gram.shape[0], dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    identity = torch.eye(gram.shape[0], dtype=gram.dtype)
    symmetric = (gram + gram.T) / 2
    jitter = scale * _RELATIVE_JITTER
    factor, info = torch.linalg.cholesky_ex(symmetric + jitter * identity)
    while int(info) != 0:
        jitter *= 10.0
        factor, info = torch.linalg.cholesky_ex(symmetric + jitter * identity)
    response = torch.linalg.solve_triangular(factor, correlation[:, None], upper=False)[:, 0]
    return factor.T.contiguous(), response


def _kept_columns(inputs: Tensor, keep: list[int], kernel: int) -> Tensor:
    index = (torch.tensor(keep, dtype=torch.long)[:, None] * kernel + torch.arange(kernel)).reshape(-1)
    return inputs.index_select(1, index.to(inputs.device))


def _kernel_size(weight: Tensor) -> int:
    return math.prod(weight.shape[2:])


def _check_shapes(data: CalibrationData, weight: Tensor, bias: Tensor | None) -> int:
    if not isinstance(data, CalibrationData):
        raise TypeError(f"data must be CalibrationData, got {type(data).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be a Conv2d weight (n, c, kh, kw), got shape {tuple(weight.shape)}")
    if data.inputs.shape[1] != weight[0].numel() or data.targets.shape[1] != weight.shape[0]:
        raise ValueError(
            f"calibration data with inputs {tuple(data.inputs.shape)} and targets {tuple(data.targets.shape)} does "
            f"not fit a weight of shape {tuple(weight.shape)} (inputs need {weight[0].numel()} columns, targets "
            f"{weight.shape[0]})"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    return int(weight.shape[1])


def _check_channel_indices(keep: Sequence[int], channels: int) -> list[int]:
    kept = [int(index) for index in keep]
    if not kept or len(set(kept)) != len(kept) or min(kept) < 0 or max(kept) >= channels:
        raise ValueError(f"keep must hold distinct channel indices in [0, {channels}), at least one; got {list(keep)}")
    return kept


def _check_ratio(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number in [0, 1) (the fraction of input channels to remove), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be in [0, 1) (the fraction of input channels to remove), got {value}")
    return float(value)


def _check_positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
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


def _images(batch: Tensor | Sequence[Tensor], index: int) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Sequence) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(f"calibration batch {index} must be an image tensor or an (images, labels) pair, got {type(batch).__name__}")


class _StopForward(Exception):
    """Raised by a capture hook to end a forward pass once the wanted tensor is seen."""


def _captured(model: nn.Module, layer: str, images: Tensor, which: str) -> Tensor:
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append(args[0] if which == "input" else output)
        raise _StopForward

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        model(images)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"{layer!r} was not called in the forward pass of {type(model).__name__}")
    return captured[0]


class _evaluating:
    """Puts a model in evaluation mode and restores every submodule's mode afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for module, mode in self.modes:
            module.training = mode


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
