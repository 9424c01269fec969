"""Every config in ``configs/`` parses and runs end to end on the digits data with tiny limits.

Every experiment composes shared blocks from ``configs/base/`` (its ``bases`` key), so these runs
cover each experiment with its bases. A CIFAR config that only parses can still be broken, so each
one is also run: the data module is swapped for the offline digits (same image size), the trainer
limited to a couple of batches, and the schedule shortened by the overrides the config itself
lists on a ``# smoke:`` comment line (for example
``# smoke: --trainer.max_epochs=3 --trainer.callbacks.start_epoch=1``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lit_prune.cli import run_cli
from lit_prune.config_bases import compose_config
from tests.conftest import CONFIG_DIR

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def _smoke_overrides(config: Path) -> list[str]:
    overrides: list[str] = []
    for line in config.read_text().splitlines():
        if line.startswith("# smoke:"):
            overrides.extend(line.removeprefix("# smoke:").split())
    return overrides


def _digits_run_signature(config: Path) -> str:
    """What a smoke run on digits depends on: everything but the data and the logger's name."""
    content = compose_config(config)
    image_size = content.pop("data", {}).get("init_args", {}).get("image_size", 32)
    content.get("trainer", {}).pop("logger", None)
    return json.dumps([content, image_size, _smoke_overrides(config)], sort_keys=True)


def _distinct_digits_runs(configs: list[Path]) -> list[Path]:
    """One config per signature: a CIFAR-100 twin of a CIFAR-10 config runs the same on digits."""
    seen: dict[str, Path] = {}
    for config in configs:
        seen.setdefault(_digits_run_signature(config), config)
    return list(seen.values())


def _digits_data_override(config: Path) -> list[str]:
    data = compose_config(config)["data"]
    if data["class_path"] == "datamodules.DigitsDataModule":
        return []
    image_size = data.get("init_args", {}).get("image_size", 32)
    digits = {"class_path": "datamodules.DigitsDataModule", "init_args": {"batch_size": 4, "image_size": image_size}}
    return ["--data", yaml.safe_dump(digits, default_flow_style=True).strip()]


def _offline_overrides(config: Path) -> list[str]:
    network_kwargs = compose_config(config)["model"].get("network_kwargs") or {}
    if network_kwargs.get("pretrained"):
        offline = {**network_kwargs, "pretrained": False}
        return ["--model.network_kwargs", yaml.safe_dump(offline, default_flow_style=True).strip()]
    return []


def test_there_are_configs() -> None:
    names = {c.name for c in CONFIGS}
    assert {"quickstart.yaml", "resnet20_cifar10.yaml", "vgg16bn_cifar100.yaml", "vit_tiny_cifar10.yaml"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.stem)
def test_config_parses(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        run_cli(["fit", "--config", str(config), "--print_config"])
    assert excinfo.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["network"]
    assert printed["data"]["class_path"].startswith("datamodules.")


_LIGHT_PROFILING = {"batch_size": None, "latency_warmup": 1, "latency_repeats": 2, "energy_repeats": 1}
"""Profiling settings of a smoke run: the data's batch, a few timed passes (a VGG16-BN profiled at
batch 128 with 20 + 20 passes alone would take a minute on a CPU)."""


def _smoke_config(config: Path) -> str:
    """The experiment composed with its bases, as YAML, with the profiling callback made light."""
    content = compose_config(config)
    for callback in content.get("trainer", {}).get("callbacks") or []:
        if callback.get("class_path") == "callbacks.profiling.ProfilingCallback":
            callback["init_args"] = {**(callback.get("init_args") or {}), **_LIGHT_PROFILING}
    return yaml.safe_dump(content, sort_keys=False)


@pytest.mark.parametrize("config", _distinct_digits_runs(CONFIGS), ids=lambda c: c.stem)
def test_config_smoke_runs_on_digits(config: Path, in_tmp_dir: Path) -> None:
    run_cli(
        [
            "fit",
            "--config",
            _smoke_config(config),
            *_digits_data_override(config),
            *_offline_overrides(config),
            "--trainer.max_epochs=1",
            *_smoke_overrides(config),
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.limit_test_batches=2",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.precision=32-true",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert list(in_tmp_dir.glob("lightning_logs/*/version_0/checkpoints/last.ckpt"))
