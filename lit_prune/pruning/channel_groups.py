"""Which channels, heads and hidden units of a supported network are removed together.

Structured pruning removes whole *units*: output channels of a convolution, attention heads,
hidden units of a transformer MLP. A unit is never a single tensor slice: removing channel ``c``
of a convolution also removes entry ``c`` of its batch norm and input channel ``c`` of every
layer that consumes it, and in a ResNet the channels that are added together by a residual
connection must all go at once (He et al., 2016; the coupling is the one handled by Li et al.,
2017, "Pruning Filters for Efficient ConvNets", ICLR, and by DepGraph, Fang et al., 2023).

A :class:`StructuredGroup` lists every tensor slice of one such set of units as
:class:`TensorSlice` entries (module name, tensor attribute, dimension, layout), plus the module
attributes that count the units (``num_heads`` of an attention layer). The description depends
only on the architecture, not on the current widths, so it serves for importance scores,
physical surgery, parameter counting and remapping masks alike.

Groups are built explicitly for each supported architecture (exact and readable, rather than a
generic graph analysis that could silently miss a coupling):

- :class:`~lit_prune.models.CifarResNet` and torchvision ``ResNet`` with ``BasicBlock``: one
  group per block for the block-internal channels (``layer1.0.conv1``: conv1 output, bn1,
  conv2 input) and, with ``include_residual=True``, one group per residual stream
  (``layer1``: the stem or the projection shortcut that opens the stream, every block's
  conv2/bn2 output added to it, and its consumers: the next blocks' conv1 and shortcut inputs
  and finally ``fc``);
- :class:`~lit_prune.models.CifarVGG`: one group per convolution (``features.0``: conv output,
  its batch norm, the next convolution's input, or ``classifier.0``'s inputs for the last one);
- timm ``VisionTransformer``: one head group per block (``blocks.0.attn``: the q, k and v rows
  of ``qkv``, the gate rows if any, the scale-norm entries if any, the ``proj`` input columns,
  and the ``num_heads``/``attn_dim`` attributes) and one hidden-unit group per MLP
  (``blocks.0.mlp``: ``fc1`` rows, the hidden norm if any, ``fc2`` input columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from timm.layers import Attention, Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock

from lit_prune.models.cifar_resnet import BasicBlock, CifarResNet
from lit_prune.models.vgg import CifarVGG

__all__ = [
    "GROUP_KINDS",
    "SUPPORTED_ARCHITECTURES",
    "ROLES",
    "StructuredGroup",
    "TensorSlice",
    "UnitCounter",
    "prunable_groups",
]

GROUP_KINDS: tuple[str, ...] = ("channels", "heads", "mlp_units")
"""Kinds of unit: convolution channels, attention heads, transformer MLP hidden units."""

ROLES: tuple[str, ...] = ("producer", "norm", "consumer")
"""What a slice is to its unit: the layer that computes it, its normalisation, a layer reading it."""

SUPPORTED_ARCHITECTURES: tuple[str, ...] = (
    "CifarResNet (resnet20/32/56)",
    "torchvision ResNet with BasicBlock (resnet18)",
    "CifarVGG (vgg16_bn)",
    "timm VisionTransformer with Attention and Mlp blocks (vit_tiny)",
)
"""The networks whose coupled units :func:`prunable_groups` knows."""


@dataclass(frozen=True)
class TensorSlice:
    """The part of one parameter or buffer that belongs to the units of a group.

    Along dimension ``dim`` the tensor holds ``chunks`` equal chunks (3 for a fused q/k/v
    projection, 1 otherwise); inside each chunk unit ``u`` owns the ``width`` consecutive
    indices starting at ``u * width`` (a head owns ``head_dim`` rows; a channel flattened with
    its ``h x w`` pooled positions owns ``h * w`` inputs of a linear layer).

    Attributes:
        module: Name of the owning module in ``model.named_modules()``.
        attr: Tensor attribute of that module (``weight``, ``bias``, ``running_mean``, ...).
        dim: Dimension along which the units are laid out.
        role: One of :data:`ROLES`.
        width: Consecutive indices per unit inside a chunk.
        chunks: Number of equal chunks the dimension is made of.
    """

    module: str
    attr: str
    dim: int
    role: str
    width: int = 1
    chunks: int = 1

    @property
    def tensor_name(self) -> str:
        """The ``named_parameters()``/``named_buffers()`` name, e.g. ``layer1.0.conv1.weight``."""
        return f"{self.module}.{self.attr}" if self.module else self.attr

    def num_units(self, dim_size: int) -> int:
        """Returns how many units a dimension of ``dim_size`` entries holds."""
        return dim_size // (self.chunks * self.width)

    def indices(self, units: Sequence[int] | Tensor, dim_size: int) -> Tensor:
        """Expands unit indices into tensor indices along :attr:`dim`.

        Args:
            units: Unit indices, in the order the result should follow.
            dim_size: Current size of the tensor along :attr:`dim`.

        Returns:
            A CPU ``long`` tensor: for each chunk in turn, the ``width`` indices of each unit.
        """
        units = torch.as_tensor(units, dtype=torch.long).reshape(-1)
        chunk_length = dim_size // self.chunks
        per_chunk = (units[:, None] * self.width + torch.arange(self.width)).reshape(-1)
        return torch.cat([per_chunk + chunk * chunk_length for chunk in range(self.chunks)])


@dataclass(frozen=True)
class UnitCounter:
    """A module attribute that must equal ``number of units * per_unit`` after surgery.

    Attributes:
        module: Name of the module in ``model.named_modules()``.
        attr: Attribute name (``num_heads``, ``attn_dim``).
        per_unit: Value per unit (1 for a count, ``head_dim`` for a width).
    """

    module: str
    attr: str
    per_unit: int


@dataclass(frozen=True)
class StructuredGroup:
    """A set of units that structured pruning removes or keeps together.

    Attributes:
        name: Stable name used in selections and the surgery history: the producing layer
            for block-internal and VGG channels (``layer1.0.conv1``, ``features.0``), the stage
            for a ResNet residual stream (``layer1``), the attention or MLP module for a ViT
            (``blocks.0.attn``, ``blocks.0.mlp``).
        kind: One of :data:`GROUP_KINDS`.
        size: Number of units when the group was built (refresh the groups after surgery).
        slices: Every tensor slice owned by the units.
        counters: Module attributes that count the units.
    """

    name: str
    kind: str
    size: int
    slices: tuple[TensorSlice, ...]
    counters: tuple[UnitCounter, ...] = ()


def prunable_groups(
    model: nn.Module, include_residual: bool = True, kinds: Sequence[str] | None = None
) -> dict[str, StructuredGroup]:
    """Lists the coupled units of a supported network.

    Args:
        model: A :class:`~lit_prune.models.CifarResNet`, a torchvision ``ResNet`` built from
            ``BasicBlock``, a :class:`~lit_prune.models.CifarVGG` or a timm ``VisionTransformer``
            whose blocks use timm's ``Attention`` and ``Mlp``.
        include_residual: For ResNets, also list the residual-stream groups (``layer1`` ...);
            with ``False`` only block-internal channels are offered. Ignored for other models.
        kinds: Keep only groups of these kinds (see :data:`GROUP_KINDS`); ``None`` keeps all.

    Returns:
        Group name to group, in the order the units appear in the network.

    Raises:
        TypeError: If ``model`` is not one of the supported classes (the message lists them)
            or ``kinds`` is not a list of strings.
        ValueError: If a supported class is built in a way the surgery does not handle
            (Bottleneck blocks, grouped convolutions, another attention or MLP type), or a kind
            is unknown.
    """
    if not isinstance(include_residual, bool):
        raise TypeError(f"include_residual must be a bool, got {type(include_residual).__name__}")
    wanted = _check_kinds(kinds)
    if isinstance(model, CifarResNet):
        groups = _resnet_groups(model, BasicBlock, include_residual)
    elif isinstance(model, ResNet):
        groups = _resnet_groups(model, TorchvisionBasicBlock, include_residual)
    elif isinstance(model, CifarVGG):
        groups = _vgg_groups(model)
    elif isinstance(model, VisionTransformer):
        groups = _vit_groups(model)
    else:
        raise TypeError(
            f"structured pruning does not support {type(model).__name__}; supported networks: "
            f"{'; '.join(SUPPORTED_ARCHITECTURES)}"
        )
    for group in groups:
        _check_group_consistent(model, group)
    return {group.name: group for group in groups if group.kind in wanted}


def _check_kinds(kinds: Sequence[str] | None) -> tuple[str, ...]:
    if kinds is None:
        return GROUP_KINDS
    if isinstance(kinds, str) or not isinstance(kinds, Sequence):
        raise TypeError(f"kinds must be a list drawn from {list(GROUP_KINDS)}, got {kinds!r}")
    for kind in kinds:
        if kind not in GROUP_KINDS:
            raise ValueError(f"unknown group kind {kind!r}; allowed kinds: {list(GROUP_KINDS)}")
    return tuple(kinds)


def _conv_output(name: str, conv: nn.Module) -> list[TensorSlice]:
    _require_plain_conv(name, conv)
    slices = [TensorSlice(name, "weight", 0, "producer")]
    if conv.bias is not None:
        slices.append(TensorSlice(name, "bias", 0, "producer"))
    return slices


def _conv_input(name: str, conv: nn.Module) -> list[TensorSlice]:
    _require_plain_conv(name, conv)
    return [TensorSlice(name, "weight", 1, "consumer")]


def _batch_norm(name: str, norm: nn.Module) -> list[TensorSlice]:
    if not isinstance(norm, nn.BatchNorm2d):
        raise ValueError(f"structured pruning expects a BatchNorm2d at {name!r}, found {type(norm).__name__}")
    return [
        TensorSlice(name, attr, 0, "norm")
        for attr in ("weight", "bias", "running_mean", "running_var")
        if getattr(norm, attr) is not None
    ]


def _linear_input(name: str, linear: nn.Module, width: int) -> list[TensorSlice]:
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"structured pruning expects a Linear layer at {name!r}, found {type(linear).__name__}")
    return [TensorSlice(name, "weight", 1, "consumer", width=width)]


def _require_plain_conv(name: str, conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f"structured pruning expects a Conv2d at {name!r}, found {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError(
            f"structured pruning supports only ungrouped convolutions (groups=1); {name!r} has groups={conv.groups}"
        )


def _pooled_positions(name: str, pool: nn.Module) -> int:
    """Flattened positions per channel after the global pooling that feeds the classifier."""
    if not isinstance(pool, nn.AdaptiveAvgPool2d):
        raise ValueError(
            f"structured pruning expects an AdaptiveAvgPool2d at {name!r} before the classifier, "
            f"found {type(pool).__name__}"
        )
    size = pool.output_size
    sides = (size, size) if isinstance(size, int) else tuple(size)
    if any(side is None for side in sides):
        raise ValueError(f"{name!r} must have a fixed output size to prune the classifier, got {size}")
    return int(sides[0]) * int(sides[1])


class _ResidualStream:
    """Slices of one residual stream while the blocks that add into it are walked."""

    def __init__(self, name: str, slices: list[TensorSlice]) -> None:
        self.name = name
        self.slices = slices


def _resnet_groups(model: nn.Module, block_type: type[nn.Module], include_residual: bool) -> list[StructuredGroup]:
    stages = [(name, child) for name, child in model.named_children() if name.startswith("layer")]
    for stage_name, stage in stages:
        for index, block in enumerate(stage):
            if not isinstance(block, block_type):
                raise ValueError(
                    f"structured pruning of {type(model).__name__} supports only "
                    f"{block_type.__module__}.{block_type.__name__} blocks; {stage_name}.{index} is a "
                    f"{type(block).__name__} (Bottleneck ResNets such as resnet50 are not supported). "
                    f"Supported networks: {'; '.join(SUPPORTED_ARCHITECTURES)}"
                )
    ordered: list[_ResidualStream | StructuredGroup] = []
    stream = _ResidualStream(stages[0][0], _conv_output("conv1", model.conv1) + _batch_norm("bn1", model.bn1))
    ordered.append(stream)
    for stage_name, stage in stages:
        for index, block in enumerate(stage):
            prefix = f"{stage_name}.{index}"
            ordered.append(
                _make_group(
                    model,
                    f"{prefix}.conv1",
                    "channels",
                    _conv_output(f"{prefix}.conv1", block.conv1)
                    + _batch_norm(f"{prefix}.bn1", block.bn1)
                    + _conv_input(f"{prefix}.conv2", block.conv2),
                )
            )
            stream.slices += _conv_input(f"{prefix}.conv1", block.conv1)
            if block.downsample is not None:
                shortcut = f"{prefix}.downsample"
                if not isinstance(block.downsample, nn.Sequential) or len(block.downsample) != 2:
                    raise ValueError(
                        f"structured pruning expects {shortcut!r} to be Sequential(Conv2d, BatchNorm2d), "
                        f"found {block.downsample}"
                    )
                stream.slices += _conv_input(f"{shortcut}.0", block.downsample[0])
                taken = {item.name for item in ordered}
                stream = _ResidualStream(
                    stage_name if stage_name not in taken else shortcut,
                    _conv_output(f"{shortcut}.0", block.downsample[0])
                    + _batch_norm(f"{shortcut}.1", block.downsample[1]),
                )
                ordered.append(stream)
            stream.slices += _conv_output(f"{prefix}.conv2", block.conv2) + _batch_norm(f"{prefix}.bn2", block.bn2)
    stream.slices += _linear_input("fc", model.fc, _pooled_positions("avgpool", model.avgpool))
    groups = []
    for item in ordered:
        if isinstance(item, StructuredGroup):
            groups.append(item)
        elif include_residual:
            groups.append(_make_group(model, item.name, "channels", item.slices))
    return groups


def _vgg_groups(model: CifarVGG) -> list[StructuredGroup]:
    features = list(model.features)
    conv_indices = [index for index, layer in enumerate(features) if isinstance(layer, nn.Conv2d)]
    groups = []
    for position, index in enumerate(conv_indices):
        norm_index = index + 1
        if norm_index >= len(features) or not isinstance(features[norm_index], nn.BatchNorm2d):
            raise ValueError(
                f"structured pruning of CifarVGG expects every convolution to be followed by a "
                f"BatchNorm2d; features.{index} is not"
            )
        if position + 1 < len(conv_indices):
            next_index = conv_indices[position + 1]
            consumer = _conv_input(f"features.{next_index}", features[next_index])
        else:
            consumer = _linear_input("classifier.0", model.classifier[0], _pooled_positions("avgpool", model.avgpool))
        groups.append(
            _make_group(
                model,
                f"features.{index}",
                "channels",
                _conv_output(f"features.{index}", features[index])
                + _batch_norm(f"features.{norm_index}", features[norm_index])
                + consumer,
            )
        )
    return groups


def _vit_groups(model: VisionTransformer) -> list[StructuredGroup]:
    groups = []
    for index, block in enumerate(model.blocks):
        prefix = f"blocks.{index}"
        attention = getattr(block, "attn", None)
        mlp = getattr(block, "mlp", None)
        if not isinstance(attention, Attention) or type(mlp) is not Mlp or not isinstance(mlp.fc1, nn.Linear):
            raise ValueError(
                f"structured pruning of VisionTransformer needs blocks with timm Attention and a "
                f"linear timm Mlp; {prefix} has attn={type(attention).__name__}, "
                f"mlp={type(mlp).__name__}"
            )
        groups.append(_head_group(model, f"{prefix}.attn", attention))
        groups.append(_mlp_group(model, f"{prefix}.mlp", mlp))
    return groups


def _head_group(model: nn.Module, name: str, attention: Attention) -> StructuredGroup:
    head_dim = attention.head_dim
    slices = [TensorSlice(f"{name}.qkv", "weight", 0, "producer", width=head_dim, chunks=3)]
    if attention.qkv.bias is not None:
        slices.append(TensorSlice(f"{name}.qkv", "bias", 0, "producer", width=head_dim, chunks=3))
    gate = getattr(attention, "gate", None)
    if gate is not None:
        slices += _linear_output(f"{name}.gate", gate, head_dim)
    slices += _layer_norm(f"{name}.norm", getattr(attention, "norm", nn.Identity()), head_dim)
    slices.append(TensorSlice(f"{name}.proj", "weight", 1, "consumer", width=head_dim))
    counters = [UnitCounter(name, "num_heads", 1)]
    if hasattr(attention, "attn_dim"):
        counters.append(UnitCounter(name, "attn_dim", head_dim))
    return _make_group(model, name, "heads", slices, tuple(counters))


def _mlp_group(model: nn.Module, name: str, mlp: Mlp) -> StructuredGroup:
    slices = _linear_output(f"{name}.fc1", mlp.fc1, 1) + _layer_norm(f"{name}.norm", mlp.norm, 1)
    slices += _linear_input(f"{name}.fc2", mlp.fc2, 1)
    return _make_group(model, name, "mlp_units", slices)


def _linear_output(name: str, linear: nn.Linear, width: int) -> list[TensorSlice]:
    slices = [TensorSlice(name, "weight", 0, "producer", width=width)]
    if linear.bias is not None:
        slices.append(TensorSlice(name, "bias", 0, "producer", width=width))
    return slices


def _layer_norm(name: str, norm: nn.Module, width: int) -> list[TensorSlice]:
    if isinstance(norm, nn.Identity):
        return []
    if not isinstance(norm, nn.LayerNorm) or not norm.elementwise_affine:
        raise ValueError(
            f"structured pruning supports an Identity or an affine LayerNorm at {name!r}, found {type(norm).__name__}"
        )
    return [
        TensorSlice(name, attr, 0, "norm", width=width)
        for attr in ("weight", "bias")
        if getattr(norm, attr) is not None
    ]


def _make_group(
    model: nn.Module,
    name: str,
    kind: str,
    slices: Sequence[TensorSlice],
    counters: tuple[UnitCounter, ...] = (),
) -> StructuredGroup:
    first = slices[0]
    size = first.num_units(_tensor_of(model, first).shape[first.dim])
    return StructuredGroup(name=name, kind=kind, size=size, slices=tuple(slices), counters=counters)


def _tensor_of(model: nn.Module, tensor_slice: TensorSlice) -> Tensor:
    return getattr(model.get_submodule(tensor_slice.module), tensor_slice.attr)


def _check_group_consistent(model: nn.Module, group: StructuredGroup) -> None:
    for tensor_slice in group.slices:
        dim_size = _tensor_of(model, tensor_slice).shape[tensor_slice.dim]
        if dim_size % (tensor_slice.chunks * tensor_slice.width) or tensor_slice.num_units(dim_size) != group.size:
            raise ValueError(
                f"{tensor_slice.tensor_name} has {dim_size} entries along dim {tensor_slice.dim}, "
                f"which does not hold the {group.size} units of group {group.name!r}; the network "
                "was changed outside the structured surgery"
            )
