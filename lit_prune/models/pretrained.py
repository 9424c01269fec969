"""Published CIFAR-10/CIFAR-100 weights of the CIFAR ResNets and VGG-BNs, loaded by model name.

Yaofo Chen, "PyTorch CIFAR Models" (https://github.com/chenyaofo/pytorch-cifar-models) releases
checkpoints of ``resnet20/32/44/56`` and ``vgg11/13/16/19_bn`` trained on CIFAR-10 and CIFAR-100,
with the state-dict layout of :mod:`lit_prune.models.cifar_resnet` and :mod:`lit_prune.models.vgg`.
The file names carry the first eight hex digits of the file's SHA-256
(``cifar10_resnet20-4118986f.pt``), the convention of ``torch.hub``. Top-1/top-5 are the test
accuracies that project's README publishes for each file.

A file is fetched with ``torch.hub.load_state_dict_from_url`` into torch.hub's cache
(``<torch.hub.get_dir()>/checkpoints/<file name>``, i.e. ``$TORCH_HOME/hub/checkpoints``), whose
hash check runs on download. torch.hub does not check a file that is already in the cache, so a
cached file's hash is checked here before it is read: a file put there by hand (the way to work
offline) is verified the same way.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lit_prune.errors import UserError
from lit_prune.models.checkpoint import load_state_dict_checked
from lit_prune.models.provenance import set_weights_source

__all__ = [
    "CIFAR_DATASETS",
    "PRETRAINED_CHECKPOINTS",
    "PretrainedCheckpoint",
    "load_pretrained_",
    "pretrained_checkpoint",
]

CIFAR_DATASETS = {10: "cifar10", 100: "cifar100"}
"""Dataset whose published weights a model with this many classes gets."""

_RELEASES = "https://github.com/chenyaofo/pytorch-cifar-models/releases/download"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")

# model: (release, {dataset: (hash prefix of the file, published test top-1 %, top-5 %)})
_PUBLISHED: dict[str, tuple[str, dict[str, tuple[str, float, float]]]] = {
    "resnet20": ("resnet", {"cifar10": ("4118986f", 92.60, 99.81), "cifar100": ("23dac2f1", 68.83, 91.01)}),
    "resnet32": ("resnet", {"cifar10": ("ef93fc4d", 93.53, 99.77), "cifar100": ("84213ce6", 70.16, 90.89)}),
    "resnet44": ("resnet", {"cifar10": ("2a3cabcb", 94.01, 99.77), "cifar100": ("ffe32858", 71.63, 91.58)}),
    "resnet56": ("resnet", {"cifar10": ("187c023a", 94.37, 99.83), "cifar100": ("f2eff4c8", 72.63, 91.94)}),
    "vgg11_bn": ("vgg", {"cifar10": ("eaeebf42", 92.79, 99.72), "cifar100": ("57d0759e", 70.78, 88.87)}),
    "vgg13_bn": ("vgg", {"cifar10": ("c01e4a43", 94.00, 99.77), "cifar100": ("5ebe5778", 74.63, 91.09)}),
    "vgg16_bn": ("vgg", {"cifar10": ("6ee7ea24", 94.16, 99.71), "cifar100": ("7d8c4031", 74.00, 90.56)}),
    "vgg19_bn": ("vgg", {"cifar10": ("57191229", 93.91, 99.64), "cifar100": ("b98f7bd7", 73.87, 90.13)}),
}


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """One published checkpoint.

    Attributes:
        model: Registry name of the network (``"vgg16_bn"``).
        dataset: ``"cifar10"`` or ``"cifar100"``.
        url: Where the file is published.
        top1: Published test top-1 accuracy, a fraction in [0, 1].
        top5: Published test top-5 accuracy, a fraction in [0, 1].
    """

    model: str
    dataset: str
    url: str
    top1: float
    top5: float

    @property
    def file_name(self) -> str:
        """The file's name, which torch.hub also uses in its cache."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The leading hex digits of the file's SHA-256, taken from its name."""
        match = _HASH_IN_NAME.search(self.file_name)
        if match is None:
            raise ValueError(f"{self.file_name} has no '-<sha256 prefix>.' part in its name")
        return match.group(1)

    def cache_path(self) -> Path:
        """Where torch.hub keeps (and looks for) the file: ``<hub dir>/checkpoints/<file name>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name

    def describe(self) -> dict[str, object]:
        """The weights source recorded on a network loaded from this checkpoint (see provenance)."""
        return {
            "kind": "pretrained",
            "description": f"published {self.dataset} weights of {self.model} (chenyaofo/pytorch-cifar-models)",
            "url": self.url,
            "file_name": self.file_name,
            "sha256_prefix": self.hash_prefix,
            "dataset": self.dataset,
            "published": {
                "test_top1": self.top1,
                "test_top5": self.top5,
                "source": "chenyaofo/pytorch-cifar-models README",
            },
        }


PRETRAINED_CHECKPOINTS: dict[tuple[str, str], PretrainedCheckpoint] = {
    (model, dataset): PretrainedCheckpoint(
        model=model,
        dataset=dataset,
        url=f"{_RELEASES}/{release}/{dataset}_{model}-{hash_prefix}.pt",
        top1=top1 / 100.0,
        top5=top5 / 100.0,
    )
    for model, (release, files) in _PUBLISHED.items()
    for dataset, (hash_prefix, top1, top5) in files.items()
}
"""Published checkpoint by (model name, dataset)."""


def pretrained_checkpoint(model: str, num_classes: int) -> PretrainedCheckpoint:
    """The published checkpoint of a model for its number of classes (10: CIFAR-10, 100: CIFAR-100).

    Args:
        model: Registry name.
        num_classes: Classes of the network.

    Returns:
        The checkpoint.

    Raises:
        UserError: If no weights are published for this model or class count.
    """
    dataset = CIFAR_DATASETS.get(num_classes)
    if dataset is None:
        raise UserError(
            f"pretrained: true for {model} needs num_classes 10 (CIFAR-10 weights) or 100 (CIFAR-100 weights), "
            f"got {num_classes}; set pretrained: false or use a 10- or 100-class data module"
        )
    checkpoint = PRETRAINED_CHECKPOINTS.get((model, dataset))
    if checkpoint is None:
        available = sorted({name for name, _ in PRETRAINED_CHECKPOINTS})
        raise UserError(f"no published CIFAR weights for {model!r}; pretrained: true works for {', '.join(available)}")
    return checkpoint


def load_pretrained_(model: nn.Module, name: str, num_classes: int) -> PretrainedCheckpoint:
    """Downloads (or reads from torch.hub's cache) the published weights and loads them strictly.

    Args:
        model: The freshly built network ``name`` with ``num_classes`` outputs (modified in place).
        name: Its registry name.
        num_classes: Its number of classes, which picks CIFAR-10 or CIFAR-100 weights.

    Returns:
        The checkpoint that was loaded; the network also records it as its weights source.

    Raises:
        UserError: If no weights are published for the model, the file cannot be downloaded (the
            message names the URL, the file name and the cache path to put it by hand), or its
            SHA-256 does not start with the prefix in its name.
        ValueError: If the file does not match the network's keys and shapes.
    """
    checkpoint = pretrained_checkpoint(name, num_classes)
    cached = checkpoint.cache_path()
    if cached.is_file():
        _check_cached_hash(checkpoint, cached)
    try:
        state_dict = torch.hub.load_state_dict_from_url(
            checkpoint.url, map_location="cpu", progress=False, check_hash=True, weights_only=True
        )
    except (urllib.error.URLError, OSError) as error:
        raise UserError(
            f"could not download the pretrained {checkpoint.dataset} weights of {name} from {checkpoint.url} "
            f"({error}). Without network access, download {checkpoint.file_name} on another machine and put it "
            f"at {cached} (torch.hub's cache: $TORCH_HOME/hub/checkpoints), or set pretrained: false"
        ) from error
    except RuntimeError as error:
        raise UserError(
            f"the download of {checkpoint.url} failed its hash check ({error}); run again, or put a verified copy of "
            f"{checkpoint.file_name} at {cached}"
        ) from error
    load_state_dict_checked(model, state_dict)
    set_weights_source(model, checkpoint.describe())
    return checkpoint


def _check_cached_hash(checkpoint: PretrainedCheckpoint, path: Path) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if not actual.startswith(checkpoint.hash_prefix):
        raise UserError(
            f"{path} is not the published {checkpoint.file_name}: its SHA-256 starts with "
            f"{actual[: len(checkpoint.hash_prefix)]}, the file name says {checkpoint.hash_prefix}; delete it (it is "
            f"downloaded again) or replace it by the file from {checkpoint.url}"
        )
