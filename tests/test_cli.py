"""The ``lit-prune`` command as a user runs it: the installed console script in a subprocess.

Each test asserts the exit status, what the command prints and the files it leaves. The runs use
the offline digits data with tiny limits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_prune.tensorboard_scalars import read_scalars
from tests.conftest import CONFIG_DIR, REPO_ROOT

LIT_PRUNE = Path(sys.executable).with_name("lit-prune")
QUICKSTART = str(CONFIG_DIR / "quickstart.yaml")
TINY_LIMITS = [
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
]
# Three epochs: dense epoch 0, prune + rewind at the start of epoch 2, retrain epoch 2.
TINY_FIT = [
    "--trainer.max_epochs=3",
    "--trainer.callbacks.epochs_per_round=2",
    "--trainer.callbacks.rounds=1",
    *TINY_LIMITS,
]
NOISE = ("litlogger", "LeafSpec", "gpuGetDeviceCount", "profiler_start", "USDT:", "Traceback", "weights_only")
MAX_ERROR_LINES = 10


def lit_prune(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script and returns its exit status and output."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    environment.pop("LIT_PRUNE_DEBUG", None)
    return subprocess.run(
        [str(LIT_PRUNE), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


def _lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One smoke run of the quickstart: 3 epochs, one lottery-ticket round to 80 %."""
    root = tmp_path_factory.mktemp("quickstart")
    result = lit_prune("fit", "--config", QUICKSTART, *TINY_FIT, cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, result


def test_quickstart_smoke_run_exits_0_and_ends_with_the_summary(
    quickstart_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, result = quickstart_run
    run_dir = root / "lightning_logs" / "quickstart" / "version_0"
    last_line = result.stdout.strip().splitlines()[-1]
    assert last_line.startswith("lit-prune: run directory lightning_logs/quickstart/version_0 | final val/top1 0.")
    assert last_line.endswith("| report lightning_logs/quickstart/version_0/report.json")
    pruning_lines = [line for line in result.stdout.splitlines() if "| round1/pruned |" in line]
    assert len(pruning_lines) == 1, result.stdout
    assert "epoch 2" in pruning_lines[0] and "80.00% sparsity" in pruning_lines[0]
    assert "rewound to epoch 1" in pruning_lines[0]
    for noise in NOISE:
        assert noise not in result.stdout + result.stderr, noise
    report = json.loads((run_dir / "report.json").read_text())
    assert [stage["name"] for stage in report["stages"]] == ["baseline", "round1/pruned", "round1/trained"]
    assert report["validated_on_test"] is False
    learning_rates = [tag for tag in read_scalars(run_dir) if tag.startswith("lr-")]
    assert learning_rates, "the learning rate is logged in every run"
    assert oct((run_dir / "report.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_last_checkpoint_is_the_final_state_and_best_is_per_stage(
    quickstart_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, _ = quickstart_run
    checkpoints = root / "lightning_logs" / "quickstart" / "version_0" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2
    assert [stage["name"] for stage in last["pruning"]["stages"]] == ["baseline", "round1/pruned", "round1/trained"]
    best = sorted(path.name for path in checkpoints.glob("best-*.ckpt"))
    assert len(best) == 2 and best[0].startswith("best-dense-epoch") and best[1] == "best-round1-pruned-epoch002.ckpt"
    final_stage = torch.load(checkpoints / best[1], map_location="cpu", weights_only=False)
    assert final_stage["epoch"] == 2 and final_stage["pruning"]["mask"] is not None


@pytest.fixture(scope="module")
def quickstart_tested(
    quickstart_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``lit-prune test`` of the quickstart run's last checkpoint, with the profiling callback only."""
    root, _ = quickstart_run
    last = root / "lightning_logs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    only_profiling = "--trainer.callbacks=[{class_path: callbacks.profiling.ProfilingCallback}]"
    result = lit_prune("test", "--config", QUICKSTART, only_profiling, "--ckpt_path", str(last), *TINY_LIMITS, cwd=root)
    return root, result


def test_test_on_a_runs_checkpoint_reports_beside_the_run(
    quickstart_tested: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, result = quickstart_tested
    run_dir = root / "lightning_logs" / "quickstart" / "version_0"
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith(f"lit-prune: run directory {run_dir}/test | test/top1 ")
    assert not (root / "lightning_logs" / "quickstart" / "version_1").exists()
    report = json.loads((run_dir / "test" / "report.json").read_text())
    fitted = json.loads((run_dir / "report.json").read_text())
    assert report["accuracy"]["test_top1"] == pytest.approx(fitted["accuracy"]["test_top1"], abs=1e-6)
    assert report["sparsity"]["global"] == pytest.approx(fitted["sparsity"]["global"])
    assert report["method"] == fitted["method"] and fitted["method"].startswith("lottery ticket"), report["method"]


def test_report_over_two_runs(quickstart_tested: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, tested = quickstart_tested
    assert tested.returncode == 0, tested.stderr
    run_dir = root / "lightning_logs" / "quickstart" / "version_0"
    result = lit_prune("report", str(run_dir), str(run_dir / "test"), "--output", "comparison", cwd=root)
    assert result.returncode == 0, result.stderr
    table = (root / "comparison" / "comparison.md").read_text()
    assert "quickstart/version_0" in table and "version_0/test" in table


def test_run_killed_after_its_last_prune_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    # Epochs 0-2 dense, prune and rewind at the start of epoch 3, retrain in epochs 3 and 4;
    # the process dies as epoch 4 starts.
    schedule = ["--trainer.max_epochs=5", "--trainer.callbacks.epochs_per_round=3", "--trainer.callbacks.rounds=1"]
    killed = lit_prune(
        "fit",
        "--config",
        QUICKSTART,
        *schedule,
        "--trainer.callbacks+=tests.kill_callback.KillAtEpoch",
        "--trainer.callbacks.epoch=4",
        *TINY_LIMITS,
        cwd=tmp_path,
    )
    assert killed.returncode == -9, killed.stderr
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    assert state["epoch"] == 3, "last.ckpt must hold the last completed epoch"
    assert [stage["name"] for stage in state["pruning"]["stages"]] == ["baseline", "round1/pruned"]
    assert not (run_dir / "report.json").exists()
    val_of_last_epoch = max(read_scalars(run_dir)["val/top1"], key=lambda point: point.step).value

    validated = lit_prune(
        "validate", "--config", QUICKSTART, *schedule, "--ckpt_path", str(last), *TINY_LIMITS, cwd=tmp_path
    )
    assert validated.returncode == 0, validated.stderr
    printed = float(validated.stdout.strip().splitlines()[-1].split("val/top1 ")[1].split()[0])
    assert printed == pytest.approx(val_of_last_epoch, abs=1e-4)

    resumed = lit_prune("fit", "--config", QUICKSTART, *schedule, "--ckpt_path", str(last), *TINY_LIMITS, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run directory {run_dir}" in resumed.stdout.strip().splitlines()[-1]
    assert not (tmp_path / "lightning_logs" / "quickstart" / "version_1").exists()
    report = json.loads((run_dir / "report.json").read_text())
    assert [stage["name"] for stage in report["stages"]] == ["baseline", "round1/pruned", "round1/trained"]
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 4


def test_help_names_callbacks_and_models_and_stays_short(tmp_path: Path) -> None:
    result = lit_prune("fit", "--help", cwd=tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) < 700
    top = "\n".join(lines[:90])
    assert "callbacks.LotteryTicket" in top and "resnet20" in top and "timm:NAME" in top
    assert "--checkpoint.monitor" in result.stdout and "--model.network" in result.stdout


def test_python_dash_m_is_the_same_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lit_prune", "callbacks"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "callbacks.LotteryTicket" in result.stdout and "callbacks.MagnitudePruning" in result.stdout


def test_models_lists_registered_models_with_sizes(tmp_path: Path) -> None:
    result = lit_prune("models", cwd=tmp_path)
    assert result.returncode == 0
    resnet20 = next(line for line in result.stdout.splitlines() if line.startswith("resnet20 "))
    assert "272,474" in resnet20 and "cifar10" in resnet20


def _truncated_checkpoint(directory: Path) -> Path:
    whole = directory / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    cut = directory / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[:2000])
    return cut


BAD_INPUTS = {
    "unknown model": (["--model.network=resnet21"], ["resnet21", "class_path", "timm:"]),
    "bad value": (["--data.batch_size=0"], ["batch_size", ">= 1"]),
    "wrong type": (["--trainer.max_epochs=many"], ["--trainer.max_epochs", "int"]),
    "unknown option": (["--model.netwrk=resnet20"], ["--model.netwrk", "--model.network"]),
    "unknown callback option": (["--trainer.callbacks.target_sparsty=0.5"], ["target_sparsty", "target_sparsity"]),
    "renamed callback option": (
        ["--trainer.callbacks.final_sparsity=0.5"],
        ["final_sparsity was renamed target_sparsity"],
    ),
    "validate on test": (["--data.init_args.val_split=0"], ["val_split", "validate_on_test"]),
    "text as checkpoint_path": (["--model.network_kwargs.checkpoint_path=notes.txt"], ["notes.txt", "torch.save"]),
    "missing config": (["--config=absent.yaml"], ["absent.yaml"]),
    "max_epochs the schedule cannot use": (["--trainer.max_epochs=5"], ["max_epochs = 3"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_a_short_message(case: str, tmp_path: Path) -> None:
    arguments, expected = BAD_INPUTS[case]
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    result = lit_prune("fit", "--config", QUICKSTART, *TINY_FIT, *arguments, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = _lines(result)
    assert len(lines) <= MAX_ERROR_LINES, "\n".join(lines)
    error = result.stderr
    for text in expected:
        assert text in error, (text, error)
    assert "Traceback" not in error
    assert not list(tmp_path.glob("lightning_logs/*/version_*")), "a failed set-up must leave no run directory"


def test_truncated_checkpoint_for_test_names_the_file(tmp_path: Path) -> None:
    cut = _truncated_checkpoint(tmp_path)
    result = lit_prune("test", "--config", QUICKSTART, "--ckpt_path", str(cut), *TINY_LIMITS, cwd=tmp_path)
    assert result.returncode == 2
    assert str(cut) in result.stderr and "cut short" in result.stderr
    assert len(_lines(result)) <= MAX_ERROR_LINES


def test_missing_cifar_offline_exits_2_naming_the_files(tmp_path: Path) -> None:
    result = lit_prune(
        "fit",
        "--config",
        str(CONFIG_DIR / "resnet20_cifar10.yaml"),
        "--data.download=false",
        "--data.data_dir=nowhere",
        "--trainer.max_epochs=1",
        *TINY_LIMITS,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "cifar-10-batches-py" in result.stderr and "data_batch_1" in result.stderr
    assert len(_lines(result)) <= MAX_ERROR_LINES


def test_report_of_a_directory_without_runs_exits_2(tmp_path: Path) -> None:
    result = lit_prune("report", str(tmp_path), "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 2
    assert str(tmp_path) in result.stderr
    assert len(_lines(result)) <= MAX_ERROR_LINES


def test_debug_prints_the_traceback(tmp_path: Path) -> None:
    result = lit_prune("fit", "--config", QUICKSTART, "--data.batch_size=0", "--debug", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "batch_size" in result.stderr


def test_validating_on_the_test_set_must_be_asked_for_and_is_reported(tmp_path: Path) -> None:
    result = lit_prune(
        "fit",
        "--config",
        QUICKSTART,
        *TINY_FIT,
        "--data.init_args.val_split=0",
        "--data.init_args.validate_on_test=true",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "lightning_logs" / "quickstart" / "version_0"
    assert json.loads((run_dir / "report.json").read_text())["validated_on_test"] is True
    assert "validated on the test set" in (run_dir / "report.md").read_text()
