"""Training-data throughput: lit-prune's CIFAR-10 path against torchvision's usual per-image path.

Both paths read the same synthetic CIFAR-10 files, written in the real on-disk format into a
temporary folder, and deliver what a training step consumes: float32 normalised 3 x 32 x 32
images after a random crop (4-pixel padding) and a random horizontal flip, with labels.

* ours: ``CIFAR10DataModule``'s shuffled loader (one ``index_select`` per batch of uint8 rows)
  followed by its batched augmentation and normalisation (``transform_batch``), here on the CPU;
* torchvision: ``CIFAR10(transform=Compose([RandomCrop(32, 4), RandomHorizontalFlip(), ToTensor(),
  Normalize(...)]))`` with ``DataLoader(batch_size=128, shuffle=True, num_workers=N)``.

Both loaders keep their worker processes between epochs (``persistent_workers``), so the figure
compares the per-batch data path rather than process start-up. The two are timed alternately, in
one process, one full epoch at a time, after one warm-up epoch each; the median epoch is reported.

Run from the repository root: ``python benchmarks/data_throughput.py --num-workers 0 2``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import CIFAR10

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules import CIFAR10DataModule  # noqa: E402
from tests.cifar_files import write_fake_cifar  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
BATCH_SIZE = 128


class _SyntheticCIFAR10(CIFAR10):
    """torchvision's CIFAR10, told to accept the synthetic files (benchmark only).

    torchvision checks each file's md5 against the published archive; the synthetic files have the
    real format but other bytes, so the checks are skipped here. Reading, decoding and the
    per-image transforms are torchvision's own, unchanged.
    """

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        self.classes = [f"class_{index}" for index in range(10)]
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}


def _epoch_seconds(batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> tuple[float, int]:
    start = time.perf_counter()
    images_seen = 0
    for images, labels in batches():
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 32, 32) and len(labels) == len(images)
        images_seen += len(images)
    return time.perf_counter() - start, images_seen


def _compare(data_dir: Path, num_workers: int, rounds: int) -> tuple[float, float]:
    """Images per second of (ours, torchvision), median over ``rounds`` interleaved epochs."""
    module = CIFAR10DataModule(
        data_dir=str(data_dir),
        batch_size=BATCH_SIZE,
        num_workers=num_workers,
        val_split=0.0,
        verify_checksums=False,
        pin_memory=False,
    )
    module.setup("fit")
    our_loader = module.train_dataloader()

    def ours() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return (module.transform_batch(batch, train=True) for batch in our_loader)

    reference = _SyntheticCIFAR10(
        str(data_dir),
        train=True,
        transform=transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        ),
    )
    reference_loader = DataLoader(
        reference, batch_size=BATCH_SIZE, shuffle=True, num_workers=num_workers, persistent_workers=num_workers > 0
    )

    def torchvision_path() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        return iter(reference_loader)

    _epoch_seconds(ours)
    _epoch_seconds(torchvision_path)
    our_rates, reference_rates = [], []
    for _ in range(rounds):
        seconds, count = _epoch_seconds(ours)
        our_rates.append(count / seconds)
        seconds, count = _epoch_seconds(torchvision_path)
        reference_rates.append(count / seconds)
    return statistics.median(our_rates), statistics.median(reference_rates)


def main() -> None:
    """Writes the synthetic data set, runs the comparison for each setting and prints it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2], help="loader workers, both paths")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[torch.get_num_threads(), 1],
        help="intra-op threads of the main process (torch.set_num_threads), both paths",
    )
    parser.add_argument("--train-images", type=int, default=10_000, help="synthetic training images")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per path")
    arguments = parser.parse_args()

    print(
        f"machine: {platform.machine()}, {len(os.sched_getaffinity(0))} usable cores, load average "
        f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
        f"batch {BATCH_SIZE}, {arguments.train_images} images, median of {arguments.rounds} epochs"
    )
    print(f"{'threads':>7} {'workers':>7} {'ours img/s':>12} {'torchvision img/s':>18} {'ratio':>7}")
    best_ours, best_reference = 0.0, 0.0
    with tempfile.TemporaryDirectory() as folder:
        write_fake_cifar(folder, "cifar10", n_train=arguments.train_images, n_test=BATCH_SIZE, seed=0)
        for threads in arguments.threads:
            torch.set_num_threads(threads)
            for num_workers in arguments.num_workers:
                ours, reference = _compare(Path(folder), num_workers, arguments.rounds)
                best_ours, best_reference = max(best_ours, ours), max(best_reference, reference)
                print(f"{threads:>7} {num_workers:>7} {ours:>12,.0f} {reference:>18,.0f} {ours / reference:>6.1f}x")
    print(f"{'best':>15} {best_ours:>12,.0f} {best_reference:>18,.0f} {best_ours / best_reference:>6.1f}x")
    print(f"load average after the runs: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
