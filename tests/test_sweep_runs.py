"""``lit-prune sweep`` run as a user runs it: the installed console script, on the digits data.

One module-scoped sweep (a 2 x 2 grid, 2 seeds, sharing one dense base run per seed) is shared by
most tests; a second, one-run sweep without a base is killed mid-run and re-run, and must end
exactly where the shared sweep's branch of the same values ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

LIT_PRUNE = Path(sys.executable).with_name("lit-prune")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
BRANCH = "target_sparsity-0.5_include_bias-false_seed-0"

CONFIG = {
    "seed_everything": 0,
    "trainer": {
        "max_epochs": 3,
        "accelerator": "cpu",
        "devices": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "limit_test_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "lightning_logs", "name": "tiny"},
        },
        "callbacks": [
            {
                "class_path": "callbacks.profiling.ProfilingCallback",
                "init_args": {"batch_size": 8, "latency_warmup": 0, "latency_repeats": 1, "energy_repeats": 1},
            },
            {
                "class_path": "callbacks.MagnitudePruning",
                "init_args": {"target_sparsity": 0.5, "schedule": "one_shot", "start_epoch": 2},
            },
        ],
    },
    "model": {
        "network": "resnet20",
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.05, "momentum": 0.9}},
        "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 1, "gamma": 0.5}},
    },
    "data": {"class_path": "datamodules.DigitsDataModule", "init_args": {"batch_size": 16}},
}


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LIT_PRUNE), "sweep", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sweep")
    (directory / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    shared = {
        "name": "tiny",
        "config": "tiny.yaml",
        "grid": {"trainer.callbacks.target_sparsity": [0.5, 0.8], "trainer.callbacks.include_bias": [False, True]},
        "seeds": [0, 1],
        "base": {"drop_callbacks": ["callbacks.MagnitudePruning"], "branch_epoch": 2},
        "layout": {"rows": "trainer.callbacks.target_sparsity", "columns": "trainer.callbacks.include_bias"},
    }
    (directory / "tiny_sweep.yaml").write_text(yaml.safe_dump(shared, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def shared_sweep(workdir: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    result = sweep("tiny_sweep.yaml", "--output", "out/tiny", cwd=workdir)
    return result, workdir / "out" / "tiny"


def test_a_2x2_grid_with_2_seeds_runs_8_branches_of_2_shared_bases(shared_sweep) -> None:
    result, sweep_dir = shared_sweep
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 of 10 runs done, 0 failed" in result.stdout
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    runs = manifest["runs"]
    assert [run["kind"] for run in runs].count("branch") == 8
    assert [run["name"] for run in runs if run["kind"] == "base"] == ["base_seed-0", "base_seed-1"]
    assert all(run["state"] == "done" and run["attempts"] == 1 for run in runs)
    assert manifest["counts"] == {"pending": 0, "running": 0, "done": 10, "failed": 0}
    branch = next(run for run in runs if run["name"] == "target_sparsity-0.8_include_bias-true_seed-1")
    assert branch["values"] == {"trainer.callbacks.target_sparsity": 0.8, "trainer.callbacks.include_bias": True}
    assert (branch["seed"], branch["base"], branch["branch_epoch"]) == (1, "base_seed-1", 2)
    for run in runs:
        run_dir = sweep_dir / run["name"]
        assert (run_dir / "config.yaml").is_file() and (run_dir / "report.json").is_file()
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    report = json.loads((sweep_dir / branch["name"] / "report.json").read_text())
    assert report["sparsity"]["global"] == pytest.approx(0.8, abs=1e-3)
    statistics = (sweep_dir / "statistics.md").read_text()
    assert "| target_sparsity=0.8, include_bias=True | 0, 1 |" in statistics
    assert "### top-1 %: target_sparsity (rows) × include_bias (columns)" in statistics
    assert (sweep_dir / "accuracy_vs_sparsity_mean.png").is_file() and (sweep_dir / "comparison.md").is_file()


def test_the_second_invocation_runs_nothing(shared_sweep, workdir: Path) -> None:
    result = sweep("tiny_sweep.yaml", "--output", "out/tiny", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ": running" not in result.stdout
    assert "10 of 10 runs done, 0 failed" in result.stdout
    manifest = json.loads((shared_sweep[1] / "manifest.json").read_text())
    assert all(run["attempts"] == 1 for run in manifest["runs"])


def test_a_branch_starts_from_the_base_state_of_its_epoch(shared_sweep) -> None:
    _, sweep_dir = shared_sweep
    start = torch.load(sweep_dir / "base_seed-0" / "checkpoints" / "start_epoch_002.ckpt", weights_only=False)
    assert (start["epoch"], start["global_step"]) == (1, 4)
    init = torch.load(sweep_dir / "base_seed-0" / "checkpoints" / "init.ckpt", weights_only=False)
    assert init["global_step"] == 0
    convolutions = [key for key in start["state_dict"] if "conv" in key]
    assert not any(torch.equal(init["state_dict"][key], start["state_dict"][key]) for key in convolutions)
    log = (sweep_dir / "_sweep" / "logs" / f"{BRANCH}.log").read_text()
    assert "--ckpt_path out/tiny/base_seed-0/checkpoints/start_epoch_002.ckpt" in log
    base_report = json.loads((sweep_dir / "base_seed-0" / "report.json").read_text())
    assert base_report["global_step"] == 4 and base_report["method"] == "dense"  # stopped after epochs 0 and 1


def test_a_sweep_killed_mid_run_resumes_and_ends_like_the_uninterrupted_one(shared_sweep, workdir: Path) -> None:
    args = ["--config", "tiny.yaml", "--grid", "trainer.callbacks.target_sparsity=0.5", "--grid"]
    args += ["trainer.callbacks.include_bias=false", "--output", "out/killed"]
    run_dir = workdir / "out" / "killed" / BRANCH
    driver = subprocess.Popen([str(LIT_PRUNE), "sweep", *args], cwd=workdir, env=ENV, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert driver.poll() is None and time.monotonic() < deadline, "the run never wrote last.ckpt"
        time.sleep(0.05)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not (run_dir / "report.json").exists(), "the run finished before it could be interrupted"
    _wait_until_gone(workdir / "out" / "killed" / "_sweep" / "runs" / f"{BRANCH}.yaml")
    result = sweep(*args, cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{BRANCH}: done (from last.ckpt)" in result.stdout
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    shared = torch.load(shared_sweep[1] / BRANCH / "checkpoints" / "last.ckpt", weights_only=False)
    assert (resumed["epoch"], resumed["global_step"]) == (shared["epoch"], shared["global_step"])
    assert resumed["global_step"] == 6
    assert resumed["state_dict"].keys() == shared["state_dict"].keys()
    for key, tensor in shared["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    for name in ("report.json",):
        left, right = (json.loads((d / name).read_text()) for d in (run_dir, shared_sweep[1] / BRANCH))
        assert left["accuracy"]["test_top1"] == right["accuracy"]["test_top1"]
        assert left["sparsity"] == right["sparsity"]


def test_failed_runs_do_not_stop_the_others_and_rerun_only_when_asked(workdir: Path) -> None:
    args = ["--config", "tiny.yaml", "--grid", "trainer.callbacks.start_epoch=1,7", "--output", "out/failing"]
    args += ["--launcher", "submitit-local", "--gpus-per-run", "0", "--time", "10"]
    first = sweep(*args, cwd=workdir)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "start_epoch-1_seed-0: done" in first.stdout and "start_epoch-7_seed-0: failed" in first.stdout
    assert "1 of 2 runs done, 1 failed" in first.stdout
    assert "--retry-failed" in first.stdout
    again = sweep(*args[:-6], cwd=workdir)
    assert again.returncode == 1 and ": running" not in again.stdout
    retried = sweep(*args[:-6], "--retry-failed", cwd=workdir)
    assert retried.returncode == 1 and "start_epoch-7_seed-0: running" in retried.stdout
    assert "start_epoch-1_seed-0: running" not in retried.stdout
    manifest = json.loads((workdir / "out" / "failing" / "manifest.json").read_text())
    states = {run["name"]: (run["state"], run["attempts"]) for run in manifest["runs"]}
    assert states == {"start_epoch-1_seed-0": ("done", 1), "start_epoch-7_seed-0": ("failed", 2)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "trainer.max_epochs=2", "--output", "out/tiny"], "made by a different sweep"),
        (["--grid", "trainer.callbacks.target_sparsity="], "has no values"),
        (["--grid", "trainer.callbacks.nope=1"], "run nope-1_seed-0: the run's parser rejects"),
    ],
)
def test_bad_input_is_a_short_user_error(shared_sweep, workdir: Path, args: list[str], message: str) -> None:
    result = sweep("--config", "tiny.yaml", *args, cwd=workdir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert len((result.stdout + result.stderr).strip().splitlines()) <= 20


def test_report_over_the_sweep_lays_out_mean_and_std_over_seeds(shared_sweep, workdir: Path) -> None:
    sweep_dir = shared_sweep[1]
    result = subprocess.run(
        [str(LIT_PRUNE), "report", str(sweep_dir), "--output", "out/report", "--rows", "target_sparsity"]
        + ["--columns", "include_bias", "--metric", "sparsity"],
        cwd=workdir,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    statistics = (workdir / "out" / "report" / "statistics.md").read_text()
    assert (workdir / "out" / "report" / "comparison.md").is_file()
    table = [line for line in statistics.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:])}
    for sparsity in (0.5, 0.8):
        for bias in ("false", "true"):
            names = [f"target_sparsity-{sparsity}_include_bias-{bias}_seed-{seed}" for seed in (0, 1)]
            reports = [json.loads((sweep_dir / name / "report.json").read_text()) for name in names]
            top1 = [100 * report["accuracy"]["test_top1"] for report in reports]
            mean, std = sum(top1) / 2, abs(top1[0] - top1[1]) / 2**0.5
            cells = rows[f"target_sparsity={sparsity}, include_bias={bias.capitalize()}"]
            assert cells[header.index("top-1 %")] == f"{mean:.2f} ± {std:.2f} (2)"
    assert "### sparsity %: target_sparsity (rows) × include_bias (columns)" in statistics


def _wait_until_gone(config_file: Path, timeout: float = 60) -> None:
    """Waits until no process runs with this config (the killed sweep's run got its SIGTERM)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = False
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                running |= str(config_file) in cmdline.read_bytes().decode(errors="replace")
            except OSError:
                continue
        if not running:
            return
        time.sleep(0.2)
    raise AssertionError(f"a run with {config_file} still runs {timeout} s after its sweep was killed")
