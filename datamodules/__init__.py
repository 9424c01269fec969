"""LightningDataModules that hold images in memory and augment whole batches on the training device."""

from datamodules.base import InMemoryImageDataModule
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from datamodules.digits import DigitsDataModule

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule", "DigitsDataModule", "InMemoryImageDataModule"]
