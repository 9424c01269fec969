"""Published CIFAR weights by name, offline: files planted in a temporary torch.hub cache.

A planted file is named like the published ones, with the first eight hex digits of its own SHA-256,
so it passes the same hash check; the table entry is pointed at that name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

import lit_prune.models.pretrained as pretrained_module
from lit_prune.errors import UserError
from lit_prune.models import PRETRAINED_CHECKPOINTS, create_model, pretrained_checkpoint, weights_source

RELEASES = "https://github.com/chenyaofo/pytorch-cifar-models/releases/download"


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary TORCH_HOME; torch.hub's cache is its ``hub/checkpoints``."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every download fails as without network; the URLs asked for are recorded."""
    asked: list[str] = []

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        asked.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return asked


def _plant(hub_dir: Path, monkeypatch: pytest.MonkeyPatch, model: str, dataset: str, network: nn.Module) -> Path:
    """Saves ``network``'s weights under a published-style name with their own hash and points the table at it."""
    staging = hub_dir.parent / "staging.pt"
    staging.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    name = f"{dataset}_{model}-{digest}.pt"
    target = hub_dir / "checkpoints" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    entry = PRETRAINED_CHECKPOINTS[(model, dataset)]
    planted = dataclasses.replace(entry, url=entry.url.rsplit("/", 1)[0] + "/" + name)
    monkeypatch.setitem(PRETRAINED_CHECKPOINTS, (model, dataset), planted)
    return target


def test_table_is_the_published_one() -> None:
    assert PRETRAINED_CHECKPOINTS[("resnet20", "cifar10")].url == f"{RELEASES}/resnet/cifar10_resnet20-4118986f.pt"
    assert PRETRAINED_CHECKPOINTS[("resnet20", "cifar100")].url == f"{RELEASES}/resnet/cifar100_resnet20-23dac2f1.pt"
    assert PRETRAINED_CHECKPOINTS[("resnet32", "cifar10")].url == f"{RELEASES}/resnet/cifar10_resnet32-ef93fc4d.pt"
    assert PRETRAINED_CHECKPOINTS[("resnet56", "cifar100")].url == f"{RELEASES}/resnet/cifar100_resnet56-f2eff4c8.pt"
    assert PRETRAINED_CHECKPOINTS[("vgg16_bn", "cifar10")].url == f"{RELEASES}/vgg/cifar10_vgg16_bn-6ee7ea24.pt"
    assert PRETRAINED_CHECKPOINTS[("vgg16_bn", "cifar100")].url == f"{RELEASES}/vgg/cifar100_vgg16_bn-7d8c4031.pt"
    published = {key: (entry.top1, entry.top5) for key, entry in PRETRAINED_CHECKPOINTS.items()}
    assert published[("vgg16_bn", "cifar10")] == (pytest.approx(0.9416), pytest.approx(0.9971))
    assert published[("vgg16_bn", "cifar100")][0] == pytest.approx(0.7400)
    assert published[("resnet20", "cifar10")][0] == pytest.approx(0.9260)
    assert published[("resnet20", "cifar100")][0] == pytest.approx(0.6883)
    assert len(PRETRAINED_CHECKPOINTS) == 16
    for (model, dataset), entry in PRETRAINED_CHECKPOINTS.items():
        assert entry.file_name == f"{dataset}_{model}-{entry.hash_prefix}.pt" and len(entry.hash_prefix) == 8


@pytest.mark.parametrize(
    ("model", "num_classes", "dataset"), [("resnet20", 10, "cifar10"), ("vgg16_bn", 100, "cifar100")]
)
def test_planted_checkpoint_loads_strictly_and_is_recorded(
    hub_dir: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str], model: str, num_classes: int, dataset: str
) -> None:
    torch.manual_seed(1)
    published = create_model(model, num_classes=num_classes)
    path = _plant(hub_dir, monkeypatch, model, dataset, published)
    torch.manual_seed(2)
    loaded = create_model(model, num_classes=num_classes, pretrained=True)
    assert offline == [], "a file in the cache is not downloaded again"
    for key, value in published.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    source = weights_source(loaded)
    assert source["kind"] == "pretrained" and source["dataset"] == dataset
    assert source["file_name"] == path.name and source["url"].endswith(path.name)
    entry = pretrained_checkpoint(model, num_classes)
    assert source["published"]["test_top1"] == entry.top1
    assert weights_source(create_model(model, num_classes=num_classes))["kind"] == "random"


def test_offline_error_names_url_file_and_cache_path(hub_dir: Path, offline: list[str]) -> None:
    with pytest.raises(UserError) as excinfo:
        create_model("vgg16_bn", num_classes=100, pretrained=True)
    message = str(excinfo.value)
    url = f"{RELEASES}/vgg/cifar100_vgg16_bn-7d8c4031.pt"
    assert offline == [url]
    assert url in message and "cifar100_vgg16_bn-7d8c4031.pt" in message
    assert str(hub_dir / "checkpoints" / "cifar100_vgg16_bn-7d8c4031.pt") in message
    assert "pretrained: false" in message


def test_a_cached_file_with_the_wrong_hash_is_refused(hub_dir: Path, offline: list[str]) -> None:
    entry = PRETRAINED_CHECKPOINTS[("resnet20", "cifar10")]
    target = hub_dir / "checkpoints" / entry.file_name
    target.parent.mkdir(parents=True)
    torch.save(create_model("resnet20").state_dict(), target)
    with pytest.raises(UserError, match="4118986f") as excinfo:
        create_model("resnet20", pretrained=True)
    assert str(target) in str(excinfo.value) and entry.url in str(excinfo.value)


def test_no_published_weights_for_other_class_counts() -> None:
    with pytest.raises(UserError, match="num_classes 10 .* or 100 .* got 7"):
        create_model("resnet56", num_classes=7, pretrained=True)
    with pytest.raises(UserError, match="true or false"):
        create_model("resnet20", pretrained="yes")


def test_checkpoint_path_takes_precedence_over_the_download(tmp_path: Path, hub_dir: Path, offline: list[str]) -> None:
    torch.manual_seed(3)
    trained = create_model("resnet32")
    checkpoint = tmp_path / "baseline.pt"
    torch.save(trained.state_dict(), checkpoint)
    loaded = create_model("resnet32", pretrained=True, checkpoint_path=checkpoint)
    assert offline == []
    assert torch.equal(loaded.fc.weight, trained.fc.weight)
    assert weights_source(loaded) == {
        "kind": "checkpoint", "description": f"checkpoint {checkpoint}", "path": str(checkpoint)
    }  # fmt: skip


def test_download_goes_through_torch_hub_with_its_hash_check(hub_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    def fake_load(url: str, **kwargs: object) -> dict[str, torch.Tensor]:
        calls.append({"url": url, **kwargs})
        return create_model("resnet20").state_dict()

    monkeypatch.setattr(pretrained_module.torch.hub, "load_state_dict_from_url", fake_load)
    create_model("resnet20", pretrained=True)
    assert calls == [
        {
            "url": f"{RELEASES}/resnet/cifar10_resnet20-4118986f.pt",
            "map_location": "cpu", "progress": False, "check_hash": True, "weights_only": True,
        }
    ]  # fmt: skip
