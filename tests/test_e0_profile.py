"""The profile-only task (E0): ``lit-prune test --config configs/e0_profile_*.yaml`` on the digits data.

The published checkpoint cannot be downloaded here, so the tests plant a file in a temporary torch.hub
cache (named with its own hash, the table pointed at it) or check the offline error of the console script.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_prune.cli import main
from lit_prune.config_bases import compose_config
from lit_prune.models import PRETRAINED_CHECKPOINTS, create_model
from tests.conftest import CONFIG_DIR

DIGITS = ["--data", "{class_path: datamodules.DigitsDataModule, init_args: {batch_size: 16}}"]
TINY = [
    "--trainer.limit_test_batches=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
    "--trainer.callbacks.batch_size=8", "--trainer.callbacks.latency_warmup=0", "--trainer.callbacks.latency_repeats=2",
    "--trainer.callbacks.energy_repeats=1",
]  # fmt: skip


@pytest.mark.parametrize("config", sorted(CONFIG_DIR.glob("e0_profile_*.yaml")), ids=lambda path: path.stem)
def test_e0_configs_profile_published_weights_for_their_dataset(config: Path) -> None:
    assert f"lit-prune test --config configs/{config.name}" in config.read_text()
    composed = compose_config(config)
    assert composed["model"]["network_kwargs"] == {"pretrained": True}
    dataset = "cifar100" if "cifar100" in config.stem else "cifar10"
    assert composed["data"]["class_path"] == f"datamodules.CIFAR{dataset[5:]}DataModule"
    assert [c["class_path"] for c in composed["trainer"]["callbacks"]] == ["callbacks.profiling.ProfilingCallback"]


def test_profile_only_task_writes_the_report_with_published_accuracy(
    in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(in_tmp_dir / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    torch.manual_seed(0)
    staging = in_tmp_dir / "weights.pt"
    torch.save(create_model("vgg16_bn", num_classes=10).state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()[:8]
    entry = PRETRAINED_CHECKPOINTS[("vgg16_bn", "cifar10")]
    planted = dataclasses.replace(entry, url=entry.url.replace("6ee7ea24", digest))
    monkeypatch.setitem(PRETRAINED_CHECKPOINTS, ("vgg16_bn", "cifar10"), planted)
    (in_tmp_dir / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    staging.rename(in_tmp_dir / "torch" / "hub" / "checkpoints" / planted.file_name)

    status = main(["test", "--config", str(CONFIG_DIR / "e0_profile_vgg16bn_cifar10.yaml"), *DIGITS, *TINY])
    assert status == 0
    run_dir = in_tmp_dir / "lightning_logs" / "e0_profile_vgg16bn_cifar10" / "version_0"
    report = json.loads((run_dir / "report.json").read_text())
    assert (report["model"], report["dataset"], report["method"], report["trigger"]) == (
        "vgg16_bn", "digits", "dense", "test"
    )  # fmt: skip
    assert report["weights"]["kind"] == "pretrained" and report["weights"]["file_name"] == planted.file_name
    accuracy = report["accuracy"]
    for key in ("test_top1", "test_top5", "train_top1", "train_top5"):
        assert 0.0 <= accuracy[key] <= 1.0, key
    published = accuracy["published"]
    assert published["test_top1"] == pytest.approx(0.9416) and published["test_top5"] == pytest.approx(0.9971)
    assert published["difference_test_top1"] == pytest.approx(accuracy["test_top1"] - 0.9416)
    profile = report["profile"]
    assert profile["macs"] > 300_000_000 and profile["size_mb"] > 55.0
    assert profile["latency_mean_ms"] > 0.0 and profile["latency_repeats"] == 2
    assert profile["peak_memory_mb"] > 0.0 and profile["avg_memory_mb"] > 0.0
    assert profile["energy_mj"] is not None or profile["energy_note"].startswith("unavailable")
    assert report["reduction"]["removed_fraction"] == 0.0
    markdown = (run_dir / "report.md").read_text()
    assert "published top-1 | difference | published top-5 | difference |" in markdown
    test_row = next(line for line in markdown.splitlines() if line.startswith("| test |"))
    difference = f"{100 * (accuracy['test_top1'] - 0.9416):+.2f} pp"
    assert "| 94.16 % |" in test_row and difference in test_row and "| 99.71 % |" in test_row
    assert "Start weights: published cifar10 weights of vgg16_bn" in markdown


def test_offline_console_script_says_where_to_put_the_checkpoint(tmp_path: Path) -> None:
    environment = {
        **os.environ, "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
        "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
    }  # fmt: skip
    config = "configs/e0_profile_vgg16bn_cifar100.yaml"
    command = [str(Path(sys.executable).with_name("lit-prune")), "test", "--config", config]
    result = subprocess.run(
        command, cwd=CONFIG_DIR.parent, env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    error = "".join(result.stderr.split())  # the message is wrapped for the terminal; URL and path have no spaces
    file_name = "cifar100_vgg16_bn-7d8c4031.pt"
    assert f"https://github.com/chenyaofo/pytorch-cifar-models/releases/download/vgg/{file_name}" in error
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / file_name) in error
