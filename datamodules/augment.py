"""Batched image augmentation with tensor ops, run on whichever device holds the batch.

Every function takes a whole batch ``N x C x H x W`` and transforms it with a handful of tensor
operations, so the same code runs on a CPU or a GPU and the data path never loops over images in
Python or goes through PIL. The augmentations are the standard CIFAR recipe of He et al., "Deep
Residual Learning for Image Recognition" (CVPR 2016): zero-pad by 4 pixels, take a random 32 x 32
crop, flip horizontally with probability 1/2, and normalise each channel by its mean and standard
deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["normalize", "random_crop", "random_horizontal_flip", "resize"]


def _check_batch(images: Tensor, name: str) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape N x C x H x W, got {type(images).__name__}.")
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape N x C x H x W (4 dimensions), got shape {tuple(images.shape)}.")


def _random_integers(high: int, count: int, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Draws ``count`` integers from ``[0, high)`` with ``generator`` and moves them to ``device``."""
    source_device = generator.device if generator is not None else device
    values = torch.randint(high, (count,), device=source_device, generator=generator)
    return values.to(device)


def random_crop(images: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pads every image by ``padding`` pixels and crops it back at a random offset.

    Each image gets its own offset ``(dy, dx)`` drawn uniformly from ``[0, 2 * padding]``. The
    padded batch is viewed (without copying) as all its ``H x W`` windows,
    ``N x C x (2p+1) x (2p+1) x H x W``, and one indexing op picks window ``(dy[n], dx[n])`` of
    every image ``n``, so the cost does not depend on a Python loop. This is the crop of He et
    al. (2016) used for CIFAR training.

    Args:
        images: Batch ``N x C x H x W`` of any dtype (uint8 in the data path).
        padding: Pixels of zeros added on each side before cropping; ``0`` returns the input.
        generator: Optional random generator for the offsets (on any device).

    Returns:
        Tensor of the same shape, dtype and device as ``images``.

    Raises:
        TypeError: If ``images`` is not a tensor or ``padding`` is not an int.
        ValueError: If ``images`` is not 4-D or ``padding`` is negative.
    """
    _check_batch(images, "images")
    if isinstance(padding, bool) or not isinstance(padding, int):
        raise TypeError(f"padding must be an int >= 0, got {padding!r}.")
    if padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding}.")
    if padding == 0:
        return images
    count, _, height, width = images.shape
    windows = F.pad(images, (padding, padding, padding, padding)).unfold(2, height, 1).unfold(3, width, 1)
    offsets_y = _random_integers(2 * padding + 1, count, images.device, generator)
    offsets_x = _random_integers(2 * padding + 1, count, images.device, generator)
    return windows[torch.arange(count, device=images.device), :, offsets_y, offsets_x]


def random_horizontal_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirrors each image left-to-right with probability 1/2, independently per image.

    The choice is blended arithmetically, ``flipped * f + images * (1 - f)`` with ``f`` in
    ``{0, 1}`` per image, which is exact and several times faster on uint8 than ``torch.where``.

    Args:
        images: Batch ``N x C x H x W`` of a numeric dtype with finite values.
        generator: Optional random generator for the coin flips (on any device).

    Returns:
        Tensor of the same shape, dtype and device as ``images``.

    Raises:
        TypeError: If ``images`` is not a tensor.
        ValueError: If ``images`` is not 4-D.
    """
    _check_batch(images, "images")
    flip = _random_integers(2, images.shape[0], images.device, generator).to(images.dtype).view(-1, 1, 1, 1)
    return images.flip(-1) * flip + images * (1 - flip)


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Converts uint8 images to float32 in ``[0, 1]`` and normalises each channel.

    Computes ``(images / 255 - mean[c]) / std[c]`` for every channel ``c`` as one in-place
    multiply and one in-place add on the converted batch.

    Args:
        images: uint8 batch ``N x C x H x W`` with values 0..255.
        mean: One mean per channel, on the ``[0, 1]`` scale.
        std: One standard deviation per channel, on the ``[0, 1]`` scale, each > 0. Pass ``mean``
            and ``std`` as tensors already on the batch's device to avoid building them on that
            device at every call (on a GPU that copy would wait for the queued work); tensor
            entries are not checked for positivity, to avoid the same wait.

    Returns:
        float32 tensor of the same shape and device.

    Raises:
        TypeError: If ``images`` is not a uint8 tensor.
        ValueError: If ``images`` is not 4-D, ``mean``/``std`` do not have one entry per channel,
            or a ``std`` given as a sequence has an entry <= 0.
    """
    _check_batch(images, "images")
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images with values 0..255, got dtype {images.dtype}.")
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std must have one entry per channel ({channels}), got {len(mean)} and {len(std)}.")
    if not isinstance(std, Tensor) and any(value <= 0 for value in std):
        raise ValueError(f"std entries must all be > 0, got {tuple(std)}.")
    mean_tensor = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
    std_tensor = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, channels, 1, 1)
    scale = 1.0 / (255.0 * std_tensor)
    shift = -mean_tensor / std_tensor
    return images.to(torch.float32).mul_(scale).add_(shift)


def resize(images: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resizes a batch with bilinear interpolation (``align_corners=False``, no antialiasing).

    Floating-point input is interpolated directly. Integer input (e.g. uint8) is interpolated in
    float32, rounded and clamped back to its dtype's range, so the result keeps the input dtype.

    Args:
        images: Batch ``N x C x H x W``.
        size: Output side length (square) or ``(height, width)``, each >= 1.

    Returns:
        Tensor ``N x C x size x size`` (or ``N x C x height x width``) with the dtype of ``images``.

    Raises:
        TypeError: If ``images`` is not a tensor or ``size`` is not an int or pair of ints.
        ValueError: If ``images`` is not 4-D or a side length is < 1.
    """
    _check_batch(images, "images")
    target = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(target) != 2 or any(isinstance(side, bool) or not isinstance(side, int) for side in target):
        raise TypeError(f"size must be an int or a (height, width) pair of ints, got {size!r}.")
    if min(target) < 1:
        raise ValueError(f"size must be >= 1 on each side, got {size!r}.")
    if tuple(images.shape[-2:]) == target:
        return images
    if images.is_floating_point():
        return F.interpolate(images, size=target, mode="bilinear", align_corners=False)
    resized = F.interpolate(images.to(torch.float32), size=target, mode="bilinear", align_corners=False)
    limits = torch.iinfo(images.dtype)
    return resized.round_().clamp_(limits.min, limits.max).to(images.dtype)
