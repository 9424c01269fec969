"""A LightningDataModule that keeps whole image splits in memory and augments batches on the device.

The images of every split live in one uint8 tensor ``N x 3 x H x W`` (CIFAR-10's training set is
150 MB). A loader step is one ``index_select`` of a batch of rows, not ``batch_size`` separate
``__getitem__`` calls and a collate; the batch reaches the training device as uint8 (a quarter of
the bytes of float32) and is cropped, flipped, normalised and resized there with tensor ops in
:meth:`InMemoryImageDataModule.on_after_batch_transfer`, which Lightning calls on the device that
trains. So the data path does not make a GPU wait.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from datamodules.augment import normalize, random_crop, random_horizontal_flip, resize
from lit_prune.errors import UserError
from lit_prune.validation import check_bool, check_int

__all__ = [
    "EpochShuffleSampler",
    "InMemoryImageDataModule",
    "InMemoryImageDataset",
    "check_validation_split",
    "pass_through_collate",
]


def check_validation_split(val_split: float, validate_on_test: bool) -> None:
    """Refuses a validation split of 0 unless validating on the test set was asked for by name.

    With no validation images the test set serves for validation, so the best checkpoint (and any
    accuracy-triggered pruning) would be chosen on test data: that must be a deliberate choice,
    which the run's report then records.

    Args:
        val_split: The fraction held out for validation (already checked to lie in ``[0, 1)``).
        validate_on_test: The data module's ``validate_on_test`` flag.

    Raises:
        UserError: If ``val_split`` is 0 without ``validate_on_test``, or the flag is not a bool.
    """
    check_bool(validate_on_test, "validate_on_test")
    if val_split == 0.0 and not validate_on_test:
        raise UserError(
            "val_split: 0 would validate on the test set, so checkpoints and accuracy-triggered pruning would be "
            "chosen on test data. Give val_split in (0, 1), or set validate_on_test: true to do this deliberately "
            "(the report then says 'validated on the test set')."
        )


def pass_through_collate(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Returns the batch unchanged: :meth:`InMemoryImageDataset.__getitems__` already stacked it.

    A module-level function, so loaders using it can be pickled into worker processes.

    Args:
        batch: ``(images, labels)`` as returned by ``__getitems__``.

    Returns:
        The same ``(images, labels)``.
    """
    return batch


class InMemoryImageDataset(Dataset):
    """Images and labels held as two tensors, served a whole batch at a time.

    ``torch.utils.data.DataLoader`` calls ``__getitems__`` with the list of indices of a batch
    (from any sampler, including the ``DistributedSampler`` Lightning injects under DDP), which
    gathers the rows in one ``index_select``; use it with :func:`pass_through_collate`.

    Args:
        images: uint8 tensor ``N x C x H x W``.
        labels: int64 tensor ``N`` of class indices.

    Raises:
        TypeError: If ``images`` is not uint8 or ``labels`` not int64.
        ValueError: If the shapes are not ``N x C x H x W`` and ``N`` with the same ``N``.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8:
            raise TypeError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images).__name__)}.")
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
            raise TypeError(f"labels must be an int64 tensor, got {getattr(labels, 'dtype', type(labels).__name__)}.")
        if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                "images must have shape N x C x H x W and labels shape N with the same N, got "
                f"{tuple(images.shape)} and {tuple(labels.shape)}."
            )
        self.images = images.contiguous()
        self.labels = labels.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Gathers a whole batch.

        In a loader worker process the rows are gathered straight into shared memory, as
        ``default_collate`` does, so handing the batch to the main process costs no extra copy.

        Args:
            indices: Row indices of the batch.

        Returns:
            ``(images, labels)``: uint8 ``B x C x H x W`` and int64 ``B``.
        """
        index = torch.as_tensor(indices, dtype=torch.int64)
        if get_worker_info() is None:
            return self.images.index_select(0, index), self.labels.index_select(0, index)
        images = torch.empty((len(index), *self.images.shape[1:]), dtype=torch.uint8).share_memory_()
        labels = torch.empty(len(index), dtype=torch.int64).share_memory_()
        torch.index_select(self.images, 0, index, out=images)
        torch.index_select(self.labels, 0, index, out=labels)
        return images, labels


class EpochShuffleSampler(Sampler[int]):
    """Random order that depends only on (seed, epoch), so a resumed run repeats it exactly.

    ``torch.utils.data.RandomSampler`` draws from the global random state, which a checkpoint
    does not restore. Lightning calls :meth:`set_epoch` at the start of every epoch (and, under
    DDP, wraps this sampler so each rank takes its share of the same permutation).

    Args:
        num_samples: Size of the dataset.
        seed: Seed of the permutations.
    """

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


class InMemoryImageDataModule(LightningDataModule):
    """Base for data modules whose splits fit in memory as uint8 tensors.

    A subclass fills :attr:`train_data`, :attr:`val_data` and :attr:`test_data` (in ``__init__``
    or ``setup``). Loaders yield uint8 batches; :meth:`on_after_batch_transfer` turns them, on the
    training device, into float32 normalised images of side :attr:`image_size`, with a random crop
    (and optionally a horizontal flip) while the trainer is training.

    Code that draws batches from these loaders outside the Trainer's loops (profiling, saliency
    scores, calibration) must pass them through :meth:`transform_batch` after moving them to the
    device, or the model sees raw uint8 pixels.

    Args:
        num_classes: Number of classes, >= 2.
        mean: Per-channel mean on the ``[0, 1]`` scale.
        std: Per-channel standard deviation on the ``[0, 1]`` scale, each > 0.
        image_size: Side length of the images the model receives, >= 1. Batches whose stored
            size differs are resized (bilinear) after augmentation.
        batch_size: Images per batch, >= 1.
        num_workers: Loader worker processes, >= 0 (0 loads in the main process).
        pin_memory: Pin batches in page-locked memory when a CUDA device is present.
        crop_padding: Zero padding of the training-time random crop, >= 0 (0 disables it).
        horizontal_flip: Whether training images are flipped left-right with probability 1/2.
        seed: Seed of the training order and augmentation. Both are functions of the seed, the
            epoch and the batch position (not of the global random state), so a run resumed from
            a checkpoint sees exactly the batches an uninterrupted run would.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = True,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int(num_classes, "num_classes", 2)
        check_int(image_size, "image_size", 1)
        check_int(batch_size, "batch_size", 1)
        check_int(num_workers, "num_workers", 0)
        check_int(crop_padding, "crop_padding", 0)
        check_bool(pin_memory, "pin_memory")
        check_bool(horizontal_flip, "horizontal_flip")
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(f"mean and std must have one entry per channel, got {tuple(mean)} and {tuple(std)}.")
        if any(value <= 0 for value in std):
            raise ValueError(f"std entries must all be > 0, got {tuple(std)}.")
        self.num_classes = num_classes
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip
        self.seed = seed
        self.train_data: InMemoryImageDataset | None = None
        self.val_data: InMemoryImageDataset | None = None
        self.test_data: InMemoryImageDataset | None = None
        self._normalization_on_device: tuple[Tensor, Tensor] | None = None

    def train_dataloader(self) -> DataLoader:
        """Shuffled loader over the training split (``drop_last=False``)."""
        return self._loader(self.train_data, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Loader over the validation split, in order."""
        return self._loader(self.val_data, "validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Loader over the test split, in order."""
        return self._loader(self.test_data, "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Loader over the test split, in order; batches are ``(images, labels)``."""
        return self._loader(self.test_data, "test", shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> tuple[Tensor, Tensor]:
        """Augments (while training) and normalises a batch on the device it was moved to.

        Args:
            batch: ``(uint8 images, int64 labels)`` from one of this module's loaders.
            dataloader_idx: Index of the loader (unused: every loader gets the same treatment).

        Returns:
            ``(float32 images N x C x image_size x image_size, labels)``.
        """
        if self.trainer is None or not self.trainer.training:
            return self.transform_batch(batch, train=False)
        return self.transform_batch(batch, train=True, generator=self._augmentation_generator(batch[0].device))

    def _augmentation_generator(self, device: torch.device) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch within epoch, rank): resumable augmentation."""
        trainer = self.trainer
        position = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        seed = hash((self.seed, trainer.current_epoch, position, trainer.global_rank)) % (2**63)
        return torch.Generator(device=device).manual_seed(seed)

    def transform_batch(
        self, batch: tuple[Tensor, Tensor], train: bool, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Turns a uint8 batch into model input: crop and flip if ``train``, normalise, resize.

        Args:
            batch: ``(uint8 images N x C x H x W, labels)`` on any device.
            train: Whether to apply the training-time random augmentation.
            generator: Random generator of the augmentation (the global one when None).

        Returns:
            ``(float32 images N x C x image_size x image_size, labels)`` on the batch's device.
        """
        images, labels = batch
        if train:
            images = random_crop(images, self.crop_padding, generator)
            if self.horizontal_flip:
                images = random_horizontal_flip(images, generator)
        mean, std = self._normalization(images.device)
        return resize(normalize(images, mean, std), self.image_size), labels

    def _normalization(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """Mean and std as tensors on ``device``, built once per device rather than per batch."""
        cached = self._normalization_on_device
        if cached is None or cached[0].device != device:
            cached = (
                torch.tensor(self.mean, dtype=torch.float32, device=device),
                torch.tensor(self.std, dtype=torch.float32, device=device),
            )
            self._normalization_on_device = cached
        return cached

    def _loader(self, dataset: InMemoryImageDataset | None, split: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"The {split} split of {type(self).__name__} is not loaded yet: call setup() first "
                "(the Trainer does this before asking for loaders)."
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=pass_through_collate,
        )
