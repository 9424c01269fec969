"""End-to-end tests of the ``lit-prune`` command on the offline digits data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lit_prune.cli import main
from lit_prune.module import ImageClassifier
from tests.conftest import CONFIG_DIR, REPO_ROOT

TINY_LIMITS = [
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=1",
    "--trainer.enable_progress_bar=false",
]
TINY_FIT = [
    "--trainer.max_epochs=3",
    "--trainer.callbacks.epochs_per_round=2",
    "--trainer.callbacks.rounds=1",
    *TINY_LIMITS,
]


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("lightning_logs/*/version_*/config.yaml"))


def test_fit_then_test_on_digits_end_to_end(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), *TINY_FIT])
    (run_dir,) = _run_dirs(in_tmp_dir)
    out = capsys.readouterr().out
    assert f"run directory {run_dir.relative_to(in_tmp_dir)}" in out
    assert "final val/top1 0." in out or "final val/top1 1." in out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["network"] == "resnet20"
    assert saved["data"]["class_path"] == "datamodules.DigitsDataModule"
    assert list(run_dir.glob("events.out.tfevents.*")), "no TensorBoard events written"
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    report = json.loads((run_dir / "report.json").read_text())
    assert report["model"] == "resnet20" and report["dataset"] == "digits"
    assert report["method"].startswith("lottery ticket")
    assert abs(report["sparsity"]["global"] - 0.8) < 1e-4
    assert [stage["name"] for stage in report["stages"]] == ["baseline", "round1/pruned", "round1/trained"]
    assert (run_dir / "report.md").is_file() and (run_dir / "accuracy_vs_epoch.png").is_file()

    main(["test", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--ckpt_path", str(last), *TINY_FIT])
    out = capsys.readouterr().out
    assert "test/top1" in out

    restored = ImageClassifier.load_from_checkpoint(last)
    assert restored.pruning_mask is not None and abs(restored.pruning_mask.sparsity() - 0.8) < 1e-4
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    for name, tensor in restored.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_console_script_prints_help() -> None:
    exe = Path(sys.executable).with_name("lit-prune")
    result = subprocess.run([str(exe), "fit", "--help"], capture_output=True, text=True, cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, result.stderr
    assert "--model.network" in result.stdout
    assert "--checkpoint.monitor" in result.stdout


def test_unknown_model_name_is_a_clear_error(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises((SystemExit, ValueError)) as excinfo:
        main(["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--model.network=resnet21", *TINY_FIT])
    message = str(excinfo.value) + capsys.readouterr().err
    assert "resnet21" in message and "resnet20" in message


def test_bad_batch_size_is_a_clear_error(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises((SystemExit, ValueError)) as excinfo:
        main(["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--data.batch_size=0", *TINY_FIT])
    message = str(excinfo.value) + capsys.readouterr().err
    assert "batch_size" in message


def test_missing_cifar_offline_names_the_files(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises((SystemExit, FileNotFoundError)) as excinfo:
        main(
            [
                "fit",
                "--config",
                str(CONFIG_DIR / "resnet20_cifar10.yaml"),
                "--data.download=false",
                "--data.data_dir=nowhere",
                "--trainer.max_epochs=1",
                *TINY_LIMITS,
            ]
        )
    message = str(excinfo.value) + capsys.readouterr().err
    assert "cifar-10-batches-py" in message and "data_batch_1" in message
