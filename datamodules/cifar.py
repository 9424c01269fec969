"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009).

The files on disk are the "python version" archives, in torchvision's layout:
``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<data_dir>/cifar-100-python/{train, test, meta}``. ``prepare_data`` downloads them with
torchvision (which checks the archive's md5); ``setup`` checks each batch file's md5 against
torchvision's published list, unpickles the batches and stacks them into one uint8 tensor.
Training uses the crop (4-pixel zero padding) and horizontal flip of He et al., "Deep Residual
Learning for Image Recognition" (CVPR 2016), applied in batches on the training device.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets import utils as torchvision_dataset_utils

from datamodules.base import InMemoryImageDataModule, InMemoryImageDataset, check_validation_split
from lit_prune.validation import check_bool, check_fraction, check_int

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule"]

_IMAGE_SHAPE = (3, 32, 32)
_PIXELS_PER_IMAGE = 3 * 32 * 32


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _CIFARDataModule(InMemoryImageDataModule):
    """CIFAR data in memory, with a seeded validation split of the training set.

    Args:
        data_dir: Directory that holds (or will hold) the extracted archive's folder.
        download: Download and extract the archive in ``prepare_data`` if files are missing or
            fail their checksum.
        batch_size: Images per batch, >= 1.
        num_workers: Loader worker processes, >= 0.
        val_split: Fraction of the training set held out for validation, in ``[0, 1)``; the
            split is drawn with ``seed``. ``0.0`` validates on the test set and needs
            ``validate_on_test``.
        seed: Seed of the validation split (independent of the global random state).
        image_size: Side length given to the model, >= 1; 224 resizes (bilinear) for ViT inputs.
        verify_checksums: Check every batch file's md5 against torchvision's published list
            before unpickling it. Turn off only for files you made yourself.
        pin_memory: Pin batches in page-locked memory when a CUDA device is present.
        validate_on_test: Allow ``val_split: 0``, validating on the test set (recorded in the
            run's report).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument is out of range.
    """

    _name: ClassVar[str]
    _torchvision_dataset: ClassVar[type[CIFAR10]]
    _label_key: ClassVar[str]
    _classes: ClassVar[int]
    _mean: ClassVar[tuple[float, float, float]]
    _std: ClassVar[tuple[float, float, float]]

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        val_split: float = 0.1,
        seed: int = 0,
        image_size: int = 32,
        verify_checksums: bool = True,
        pin_memory: bool = True,
        validate_on_test: bool = False,
    ) -> None:
        super().__init__(
            num_classes=self._classes,
            mean=self._mean,
            std=self._std,
            image_size=image_size,
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            crop_padding=4,
            horizontal_flip=True,
            seed=seed,
        )
        if not isinstance(data_dir, (str, Path)):
            raise TypeError(f"data_dir must be a path string, got {data_dir!r}.")
        self.download = check_bool(download, "download")
        self.verify_checksums = check_bool(verify_checksums, "verify_checksums")
        self.val_split = check_fraction(val_split, "val_split", meaning="0.0 validates on the test set")
        check_validation_split(self.val_split, validate_on_test)
        check_int(seed, "seed", None)
        self.data_dir = Path(data_dir)
        self.validates_on_test = self.val_split == 0.0

    @property
    def dataset_dir(self) -> Path:
        """The folder that holds the batch files, ``data_dir / <archive folder>``."""
        return self.data_dir / self._torchvision_dataset.base_folder

    def prepare_data(self) -> None:
        """Downloads and extracts the archive when ``download`` is set and the files are not usable.

        Raises:
            ConnectionError: If the download fails (e.g. no network), with where to put the files.
        """
        if not self.download or self._files_usable():
            return
        dataset = self._torchvision_dataset
        try:
            torchvision_dataset_utils.download_and_extract_archive(
                dataset.url, str(self.data_dir), filename=dataset.filename, md5=dataset.tgz_md5
            )
        except OSError as error:
            raise ConnectionError(
                f"Could not download {self._name} from {dataset.url} into {self.data_dir} ({error}). "
                "This machine may have no network access: download the archive elsewhere, extract it "
                f"into {self.data_dir} so that {self.dataset_dir} holds {', '.join(self._file_names())}, "
                "and set `download: false`."
            ) from error

    def setup(self, stage: str | None = None) -> None:
        """Loads the training and test batches once and draws the validation split.

        Args:
            stage: Lightning stage (``fit``, ``validate``, ``test``, ``predict``); every stage
                loads the same data.

        Raises:
            FileNotFoundError: If a batch file is missing, naming the files and the archive URL.
            ValueError: If a file fails its checksum or does not have CIFAR's structure.
        """
        if self.train_data is not None:
            return
        self._check_files_present()
        if self.verify_checksums:
            self._check_checksums()
        train_images, train_labels = self._load(self._torchvision_dataset.train_list)
        test_images, test_labels = self._load(self._torchvision_dataset.test_list)
        self.test_data = InMemoryImageDataset(test_images, test_labels)
        if self.val_split == 0.0:
            self.train_data = InMemoryImageDataset(train_images, train_labels)
            self.val_data = self.test_data
            return
        train_index, val_index = self._split_indices(train_labels.shape[0])
        self.train_data = InMemoryImageDataset(train_images[train_index], train_labels[train_index])
        self.val_data = InMemoryImageDataset(train_images[val_index], train_labels[val_index])

    def _file_names(self) -> list[str]:
        dataset = self._torchvision_dataset
        return [name for name, _ in dataset.train_list + dataset.test_list]

    def _files_usable(self) -> bool:
        dataset = self._torchvision_dataset
        for name, checksum in dataset.train_list + dataset.test_list:
            path = self.dataset_dir / name
            if not path.is_file() or (self.verify_checksums and _md5(path) != checksum):
                return False
        return True

    def _check_files_present(self) -> None:
        missing = [name for name in self._file_names() if not (self.dataset_dir / name).is_file()]
        if missing:
            dataset = self._torchvision_dataset
            raise FileNotFoundError(
                f"{self._name} not found: {self.dataset_dir} lacks {', '.join(missing)}. The expected files "
                f"are {', '.join(self._file_names())} in {self.dataset_dir}. Download {dataset.url} and "
                f"extract it into {self.data_dir} (it unpacks to {dataset.base_folder}/), or set "
                "`download: true` to let prepare_data fetch it."
            )

    def _check_checksums(self) -> None:
        dataset = self._torchvision_dataset
        for name, checksum in dataset.train_list + dataset.test_list:
            path = self.dataset_dir / name
            actual = _md5(path)
            if actual != checksum:
                raise ValueError(
                    f"{path} is corrupt or not the original {self._name} file: its md5 is {actual}, "
                    f"torchvision's published md5 is {checksum}. Delete it and download again "
                    "(`download: true`), or set `verify_checksums: false` to load files you made yourself."
                )

    def _load(self, files: list[list[str]]) -> tuple[Tensor, Tensor]:
        images, labels = zip(*(self._read_batch(self.dataset_dir / name) for name, _ in files))
        stacked_images = torch.from_numpy(np.concatenate(images)).reshape(-1, *_IMAGE_SHAPE)
        return stacked_images, torch.from_numpy(np.concatenate(labels))

    def _read_batch(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Unpickles one batch file and checks its structure.

        Unpickling runs code chosen by the file's author: with ``verify_checksums`` the file's md5
        has been checked against torchvision's list before this is called.
        """
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        if not isinstance(entry, dict) or "data" not in entry or self._label_key not in entry:
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(
                f"{path} is not a {self._name} batch: expected a pickled dict with keys 'data' and "
                f"'{self._label_key}', got {keys}."
            )
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS_PER_IMAGE:
            raise ValueError(
                f"{path}: 'data' must be a uint8 array of shape N x {_PIXELS_PER_IMAGE} (3 x 32 x 32 images, "
                f"channel-major rows), got dtype {data.dtype} and shape {data.shape}."
            )
        labels = np.asarray(entry[self._label_key])
        if labels.shape != (data.shape[0],) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
            raise ValueError(
                f"{path}: '{self._label_key}' must hold one integer label per image ({data.shape[0]}), "
                f"got dtype {labels.dtype} and shape {labels.shape}."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self._classes):
            raise ValueError(
                f"{path}: '{self._label_key}' must lie in 0..{self._classes - 1} for {self._name}, "
                f"got values from {labels.min()} to {labels.max()}."
            )
        return data, labels.astype(np.int64)

    def _split_indices(self, count: int) -> tuple[Tensor, Tensor]:
        """Seeded random split of ``range(count)`` into sorted train and validation indices."""
        val_count = round(self.val_split * count)
        if not 0 < val_count < count:
            raise ValueError(
                f"val_split={self.val_split} of {count} training images gives {val_count} validation "
                f"images; it must leave at least one image in each split (or use val_split=0.0)."
            )
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        return order[val_count:].sort().values, order[:val_count].sort().values


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 50,000 training and 10,000 test images of 10 classes, 32 x 32 RGB.

    Normalised with the training set's per-channel mean (0.4914, 0.4822, 0.4465) and standard
    deviation (0.2470, 0.2435, 0.2616). See :class:`_CIFARDataModule` for the arguments.
    """

    _name = "CIFAR-10"
    _torchvision_dataset = CIFAR10
    _label_key = "labels"
    _classes = 10
    _mean = (0.4914, 0.4822, 0.4465)
    _std = (0.2470, 0.2435, 0.2616)


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 50,000 training and 10,000 test images of 100 fine classes, 32 x 32 RGB.

    Normalised with the training set's per-channel mean (0.5071, 0.4865, 0.4409) and standard
    deviation (0.2673, 0.2564, 0.2762). See :class:`_CIFARDataModule` for the arguments.
    """

    _name = "CIFAR-100"
    _torchvision_dataset = CIFAR100
    _label_key = "fine_labels"
    _classes = 100
    _mean = (0.5071, 0.4865, 0.4409)
    _std = (0.2673, 0.2564, 0.2762)
