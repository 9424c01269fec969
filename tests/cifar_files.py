"""Test helper: writes small CIFAR-10/100 datasets in the exact on-disk format of the real archives.

The files match what ``cifar-10-python.tar.gz`` and ``cifar-100-python.tar.gz`` extract to (and
what torchvision reads): pickled dicts with a uint8 ``data`` array of shape ``N x 3072`` (the red,
green and blue planes of each 32 x 32 image, row-major) and a list of integer labels, plus the
metadata file. Their md5 sums differ from the published ones, so loaders must be told not to
verify checksums.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FakeCifar", "write_fake_cifar"]

_CIFAR10_TRAIN_FILES = [f"data_batch_{index}" for index in range(1, 6)]


@dataclass(frozen=True)
class FakeCifar:
    """What :func:`write_fake_cifar` wrote.

    Attributes:
        directory: The dataset folder (``root/cifar-10-batches-py`` or ``root/cifar-100-python``).
        train_images: uint8 ``n_train x 3 x 32 x 32``, in file order.
        train_labels: int64 ``n_train``.
        test_images: uint8 ``n_test x 3 x 32 x 32``.
        test_labels: int64 ``n_test``.
    """

    directory: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _dump(path: Path, entry: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(entry, file, protocol=2)


def write_fake_cifar(
    root: str | Path, dataset: str = "cifar10", n_train: int = 50, n_test: int = 20, seed: int = 0
) -> FakeCifar:
    """Writes random images and labels as CIFAR-10 or CIFAR-100 files under ``root``.

    CIFAR-10's training images are spread over ``data_batch_1`` .. ``data_batch_5`` in order, as
    in the real archive; CIFAR-100 has one ``train`` file with fine and coarse labels.

    Args:
        root: The ``data_dir`` to write into (created if needed).
        dataset: ``"cifar10"`` or ``"cifar100"``.
        n_train: Number of training images, >= 0.
        n_test: Number of test images, >= 0.
        seed: Seed of the random pixels and labels.

    Returns:
        The folder written and the arrays it holds.

    Raises:
        ValueError: If ``dataset`` is not one of the two names or a count is negative.
    """
    if dataset not in ("cifar10", "cifar100"):
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}.")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}.")
    rng = np.random.default_rng(seed)
    num_classes = 10 if dataset == "cifar10" else 100
    train_images = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    train_labels = rng.integers(0, num_classes, size=n_train, dtype=np.int64)
    test_labels = rng.integers(0, num_classes, size=n_test, dtype=np.int64)
    folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
    directory = Path(root) / folder
    directory.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        chunks = np.array_split(np.arange(n_train), len(_CIFAR10_TRAIN_FILES))
        for index, (name, rows) in enumerate(zip(_CIFAR10_TRAIN_FILES, chunks), start=1):
            label = f"training batch {index} of 5"
            _write_cifar10_batch(directory / name, label, train_images[rows], train_labels[rows])
        _write_cifar10_batch(directory / "test_batch", "testing batch 1 of 1", test_images, test_labels)
        _dump(
            directory / "batches.meta",
            {
                "num_cases_per_batch": max(len(chunk) for chunk in chunks),
                "label_names": [f"class_{index}" for index in range(10)],
                "num_vis": 3072,
            },
        )
    else:
        _write_cifar100_batch(directory / "train", "training batch 1 of 1", train_images, train_labels)
        _write_cifar100_batch(directory / "test", "testing batch 1 of 1", test_images, test_labels)
        _dump(
            directory / "meta",
            {
                "fine_label_names": [f"fine_{index}" for index in range(100)],
                "coarse_label_names": [f"coarse_{index}" for index in range(20)],
            },
        )
    return FakeCifar(directory, train_images, train_labels, test_images, test_labels)


def _write_cifar10_batch(path: Path, batch_label: str, images: np.ndarray, labels: np.ndarray) -> None:
    _dump(
        path,
        {
            "batch_label": batch_label,
            "labels": [int(label) for label in labels],
            "data": images.reshape(len(images), -1),
            "filenames": [f"image_{index}.png" for index in range(len(images))],
        },
    )


def _write_cifar100_batch(path: Path, batch_label: str, images: np.ndarray, labels: np.ndarray) -> None:
    _dump(
        path,
        {
            "filenames": [f"image_{index}.png" for index in range(len(images))],
            "batch_label": batch_label,
            "fine_labels": [int(label) for label in labels],
            "coarse_labels": [int(label) // 5 for label in labels],
            "data": images.reshape(len(images), -1),
        },
    )
