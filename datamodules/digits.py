"""scikit-learn's bundled handwritten digits as 3 x 32 x 32 images: real data that needs no network.

The 1,797 8 x 8 images of ``sklearn.datasets.load_digits`` (UCI "Optical Recognition of
Handwritten Digits", Alpaydin and Kaynak 1998) have grey levels 0..16. They are scaled to
0..255, upsampled to 32 x 32 with bilinear interpolation, replicated to 3 channels so CIFAR
networks take them unchanged, and split (stratified by class, seeded) into train, validation and
test sets. Everything is computed in ``__init__`` (a few milliseconds), so ``mean``/``std`` are
known as soon as the module exists.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor

from datamodules.augment import resize
from datamodules.base import InMemoryImageDataModule, InMemoryImageDataset, check_validation_split
from lit_prune.validation import check_fraction, check_int

__all__ = ["DigitsDataModule"]

_STORED_SIZE = 32
_MAX_GREY_LEVEL = 16


def _digit_images() -> tuple[Tensor, Tensor]:
    """All 1,797 digits as uint8 ``N x 3 x 32 x 32`` images and int64 labels."""
    digits = load_digits()
    grey = torch.from_numpy(digits.images).to(torch.float32).unsqueeze(1)
    grey_uint8 = (grey * (255.0 / _MAX_GREY_LEVEL)).round_().to(torch.uint8)
    upsampled = resize(grey_uint8, _STORED_SIZE)
    return upsampled.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(digits.target).to(torch.int64)


class DigitsDataModule(InMemoryImageDataModule):
    """Handwritten digits (10 classes) served as 3 x 32 x 32 images, for quick runs and tests.

    Images are stored at 32 x 32; with another ``image_size`` each batch is resized (bilinear)
    on the device after augmentation. Training uses a random crop with 2-pixel zero padding and
    no horizontal flip (digits are not mirror-symmetric). ``mean`` and ``std`` are measured on
    the training split.

    Args:
        batch_size: Images per batch, >= 1.
        num_workers: Loader worker processes, >= 0.
        val_split: Fraction of all images held out for validation, in ``[0, 1)``; ``0.0``
            validates on the test set and needs ``validate_on_test``.
        test_split: Fraction of all images held out for testing, in ``(0, 1)``.
        seed: Seed of the stratified split.
        image_size: Side length given to the model, >= 1.
        pin_memory: Pin batches in page-locked memory when a CUDA device is present.
        validate_on_test: Allow ``val_split: 0``, validating on the test set (recorded in the
            run's report).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range or the splits leave no training images.
    """

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        val_split: float = 0.15,
        test_split: float = 0.15,
        seed: int = 0,
        image_size: int = 32,
        pin_memory: bool = True,
        validate_on_test: bool = False,
    ) -> None:
        val_fraction = check_fraction(val_split, "val_split", meaning="0.0 validates on the test set")
        check_validation_split(val_fraction, validate_on_test)
        test_fraction = check_fraction(test_split, "test_split", zero=False)
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"val_split + test_split must be < 1 to leave training images, got {val_split} + {test_split}."
            )
        check_int(seed, "seed", None)
        images, labels = _digit_images()
        count = labels.shape[0]
        rest, test = train_test_split(
            torch.arange(count).numpy(),
            test_size=round(test_fraction * count),
            stratify=labels.numpy(),
            random_state=seed,
        )
        if val_fraction > 0.0:
            train, val = train_test_split(
                rest, test_size=round(val_fraction * count), stratify=labels.numpy()[rest], random_state=seed
            )
        else:
            train, val = rest, test
        train_images = images[torch.from_numpy(train)]
        scaled = train_images.to(torch.float32).div_(255.0)
        super().__init__(
            num_classes=10,
            mean=scaled.mean(dim=(0, 2, 3)).tolist(),
            std=scaled.std(dim=(0, 2, 3)).tolist(),
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            crop_padding=2,
            horizontal_flip=False,
            seed=seed,
        )
        self.val_split = val_fraction
        self.validates_on_test = val_fraction == 0.0
        self.test_split = test_fraction
        self.train_data = InMemoryImageDataset(train_images, labels[torch.from_numpy(train)])
        self.val_data = InMemoryImageDataset(images[torch.from_numpy(val)], labels[torch.from_numpy(val)])
        self.test_data = InMemoryImageDataset(images[torch.from_numpy(test)], labels[torch.from_numpy(test)])
