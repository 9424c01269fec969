"""ViT-Tiny (Dosovitskiy et al., 2021; the "Ti" size of Touvron et al., 2021) via timm.

timm's ``vit_tiny_patch16_224``: embedding 192, depth 12, 3 heads, MLP ratio 4. For CIFAR it is
built at 32 pixels with 4-pixel patches (64 tokens plus the class token) by default. ImageNet
pretraining applies only at its native geometry, 224 pixels with 16-pixel patches: weights come
from the timm hub (``pretrained=True``, needs network) or from a local file
(``checkpoint_path``), with the classification head freshly initialised for ``num_classes``.
"""

from __future__ import annotations

import os

import timm
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor

from lit_prune.models.checkpoint import describe_state_dict_mismatch, load_state_dict_checked, read_state_dict
from lit_prune.models.provenance import set_weights_source
from lit_prune.models.registry import register_model

__all__ = ["vit_tiny"]

_TIMM_NAME = "vit_tiny_patch16_224"
_PRETRAINED_IMAGE_SIZE = 224
_PRETRAINED_PATCH_SIZE = 16
_CIFAR_IMAGE_SIZE = 32
_CIFAR_PATCH_SIZE = 4
_HEAD_PREFIX = "head."


@register_model("vit_tiny")
def vit_tiny(
    num_classes: int = 10,
    image_size: int = _CIFAR_IMAGE_SIZE,
    patch_size: int | None = None,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike[str] | None = None,
    drop_path_rate: float = 0.0,
) -> VisionTransformer:
    """Builds ViT-Tiny, randomly initialised or from pretrained weights.

    ``checkpoint_path`` is read first as a checkpoint of exactly this network (same image
    size, patch size and classes) and then loaded strictly. Otherwise it is taken as a
    pretrained source: an ImageNet-style timm ``vit_tiny_patch16_224`` state dict whose
    backbone is loaded strictly and whose head is replaced by a fresh ``num_classes`` head.

    Args:
        num_classes: Output size of the classification head.
        image_size: Side of the square input image in pixels.
        patch_size: Side of a square patch; ``None`` means 4 at 32 pixels and 16 otherwise.
        pretrained: Download ImageNet weights from the timm hub (needs network) unless
            ``checkpoint_path`` provides them.
        checkpoint_path: Local weight file, see above. Takes precedence over the download.
        drop_path_rate: Stochastic-depth rate (Huang et al., 2016), in [0, 1).

    Returns:
        A timm ``VisionTransformer``.

    Raises:
        ValueError: If the geometry is invalid, if pretrained weights are requested at a
            geometry other than 224 pixels with 16-pixel patches, or if the file matches
            neither this network nor a ViT-Tiny backbone.
        TypeError: If an argument has the wrong type.
        FileNotFoundError: If ``checkpoint_path`` does not exist.
        ConnectionError: If ``pretrained=True`` without ``checkpoint_path`` and the hub cannot
            be reached.
    """
    patch_size = _resolve_patch_size(image_size, patch_size)
    _check_drop_path_rate(drop_path_rate)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be a bool, got {type(pretrained).__name__}")
    if checkpoint_path is None and pretrained:
        _require_pretrained_geometry(image_size, patch_size, source="pretrained=True", mismatch="")
        return _download_pretrained(num_classes, drop_path_rate)
    model = timm.create_model(
        _TIMM_NAME,
        pretrained=False,
        num_classes=num_classes,
        img_size=image_size,
        patch_size=patch_size,
        drop_path_rate=drop_path_rate,
    )
    if checkpoint_path is None:
        return model
    state_dict = read_state_dict(checkpoint_path)
    mismatch = describe_state_dict_mismatch(model, state_dict)
    if not mismatch:
        load_state_dict_checked(model, state_dict)
        return model
    source = f"checkpoint_path={str(checkpoint_path)!r}"
    _require_pretrained_geometry(image_size, patch_size, source=source, mismatch=mismatch)
    load_state_dict_checked(model, _with_fresh_head(checkpoint_filter_fn(state_dict, model), model))
    return model


def _resolve_patch_size(image_size: int, patch_size: int | None) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if patch_size is None:
        return _CIFAR_PATCH_SIZE if image_size == _CIFAR_IMAGE_SIZE else _PRETRAINED_PATCH_SIZE
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive int or None, got {patch_size!r}")
    if image_size % patch_size != 0:
        raise ValueError(
            f"image_size ({image_size}) must be a multiple of patch_size ({patch_size}); "
            f"e.g. image_size=32 with patch_size=4, or image_size=224 with patch_size=16"
        )
    return patch_size


def _check_drop_path_rate(drop_path_rate: float) -> None:
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)):
        raise TypeError(f"drop_path_rate must be a float in [0, 1), got {type(drop_path_rate).__name__}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")


def _require_pretrained_geometry(image_size: int, patch_size: int, source: str, mismatch: str) -> None:
    if image_size == _PRETRAINED_IMAGE_SIZE and patch_size == _PRETRAINED_PATCH_SIZE:
        return
    detail = f"\nthe file does not match this network either:\n{mismatch}" if mismatch else ""
    raise ValueError(
        f"{source}: ImageNet-pretrained ViT-Tiny weights need image_size={_PRETRAINED_IMAGE_SIZE} "
        f"and patch_size={_PRETRAINED_PATCH_SIZE}, got image_size={image_size} and "
        f"patch_size={patch_size}; resize the images to {_PRETRAINED_IMAGE_SIZE} pixels or train "
        f"from scratch with pretrained=False{detail}"
    )


def _download_pretrained(num_classes: int, drop_path_rate: float) -> VisionTransformer:
    try:
        model = timm.create_model(_TIMM_NAME, pretrained=True, num_classes=num_classes, drop_path_rate=drop_path_rate)
    except OSError as error:
        raise ConnectionError(
            f"could not download the pretrained {_TIMM_NAME} weights from the timm/Hugging Face "
            f"hub; the machine seems to be offline ({error}). Save an ImageNet "
            f"{_TIMM_NAME} state dict to a file on a machine with network and pass "
            "checkpoint_path=FILE instead"
        ) from error
    description = f"ImageNet weights of timm's {_TIMM_NAME} (timm hub), fresh {num_classes}-class head"
    set_weights_source(model, {"kind": "pretrained", "description": description})
    return model


def _with_fresh_head(state_dict: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    backbone = {key: value for key, value in state_dict.items() if not key.startswith(_HEAD_PREFIX)}
    fresh_head = {key: value for key, value in model.state_dict().items() if key.startswith(_HEAD_PREFIX)}
    return {**backbone, **fresh_head}
