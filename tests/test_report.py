"""Tests of the run report (lit_prune.report), the comparison (`lit-prune report`) and event reading."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lit_prune.cli import run_cli
from lit_prune.models import create_model
from lit_prune.pruning import global_prune_mask, magnitude_scores, prunable_parameters
from lit_prune.report import (
    REPORT_JSON,
    REPORT_MD,
    accuracy_section,
    build_report,
    check_report,
    dataset_name,
    load_report,
    measure_profile,
    sparsity_summary,
    to_jsonable,
    write_report,
)
from lit_prune.report_compare import (
    ACCURACY_VS_EPOCH,
    ACCURACY_VS_SPARSITY,
    COMPARISON_MD,
    LOSS_VS_EPOCH,
    compare_runs,
    expand_run_dirs,
    load_runs,
)
from lit_prune.report_compare import main as report_main
from lit_prune.tensorboard_scalars import epoch_series, read_scalars
from tests.conftest import CONFIG_DIR

PLOTS = (ACCURACY_VS_EPOCH, LOSS_VS_EPOCH, ACCURACY_VS_SPARSITY)


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _profile(**overrides: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "latency_ms": 10.0,
        "peak_memory_mb": 5.0,
        "avg_memory_mb": 4.0,
        "energy_mj": None,
        "energy_note": "unavailable: no counters",
        "macs": 1_000_000,
        "nonzero_macs": 1_000_000,
        "size_mb": 1.0,
        "sparse_size_mb": 1.0,
        "device": "cpu",
        "batch_size": 8,
        "notes": {"energy_mj": "unavailable: no counters"},
    }
    profile.update(overrides)
    return profile


def _report(
    method: str, sparsity: float, top1: float, stages: list[dict[str, Any]] | None = None, **profile: Any
) -> dict[str, Any]:
    net = _tiny_net()
    mask = None
    if sparsity:
        mask = global_prune_mask(magnitude_scores(prunable_parameters(net)), sparsity)
        mask.apply_(net)
    return build_report(
        model="tiny",
        dataset="digits",
        method=method,
        network=net,
        mask=mask,
        accuracy=accuracy_section({"top1": top1, "top5": 1.0}, None, train_note="not measured"),
        profile=_profile(**profile),
        stages=stages or [],
    )


def _write_run(root: Path, name: str, report: dict[str, Any], curves: dict[str, list[float]]) -> Path:
    """A run directory with a report and TensorBoard scalars logged like Lightning does (with ``epoch``)."""
    logger = TensorBoardLogger(str(root), name=name, version=0)
    step = 0
    for epoch in range(max(len(values) for values in curves.values())):
        step += 5
        metrics = {tag: values[epoch] for tag, values in curves.items() if epoch < len(values)}
        logger.log_metrics({**metrics, "epoch": epoch}, step=step)
    logger.finalize("success")
    write_report(report, logger.log_dir)
    return Path(logger.log_dir)


def test_dataset_names_are_readable() -> None:
    from datamodules import DigitsDataModule

    assert dataset_name(DigitsDataModule(batch_size=8)) == "digits"
    assert dataset_name(None) == "unknown"
    assert dataset_name(object()) == "object"


def test_sparsity_from_mask_and_from_zero_weights() -> None:
    net = _tiny_net()
    mask = global_prune_mask(magnitude_scores(prunable_parameters(net)), 0.5)
    from_mask = sparsity_summary(net, mask)
    assert from_mask["source"] == "mask"
    assert from_mask["global"] == pytest.approx(mask.sparsity())
    assert from_mask["layers"] == pytest.approx(mask.layer_sparsity())
    assert from_mask["zero_weight_fraction"] == 0.0, "the mask is not applied yet"
    mask.apply_(net)
    without_mask = sparsity_summary(net, None)
    assert without_mask["source"] == "zero weights"
    assert without_mask["global"] == pytest.approx(mask.sparsity())
    assert set(without_mask["layers"]) == {"0.weight", "4.weight"}


def test_measure_profile_sparse_size_below_dense_at_90_percent() -> None:
    torch.manual_seed(0)
    net = create_model("resnet20", num_classes=10)
    mask = global_prune_mask(magnitude_scores(prunable_parameters(net)), 0.9)
    mask.apply_(net)
    inputs = torch.randn(4, 3, 32, 32)
    profile = measure_profile(net, inputs, mask, warmup=0, repeats=1, energy_repeats=1, sparse_inference=True)
    assert profile["sparse_size_mb"] < 0.3 * profile["size_mb"]
    assert profile["nonzero_macs"] < 0.3 * profile["macs"]
    assert profile["batch_size"] == 4 and profile["device"] == "cpu"
    assert profile["sparse_inference"]["max_abs_logit_difference"] < 1e-4
    assert profile["energy_mj"] is not None or profile["energy_note"]


def test_a_failed_measurement_is_null_with_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_prune.report as report_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no timer")

    monkeypatch.setattr(report_module, "measure_latency", broken)
    with pytest.warns(UserWarning, match="latency_ms"):
        profile = measure_profile(_tiny_net(), torch.randn(2, 3, 8, 8), warmup=0, repeats=1, energy_repeats=1)
    assert profile["latency_ms"] is None and "RuntimeError: no timer" in profile["notes"]["latency_ms"]
    assert profile["macs"] > 0


def test_build_report_checks_the_contract() -> None:
    report = _report("dense", 0.0, 0.75)
    check_report(json.loads(json.dumps(report)))
    assert report["accuracy"]["train_top1"] is None and report["accuracy"]["notes"]["train_top1"] == "not measured"
    with pytest.raises(ValueError, match="profile.latency_ms is null without a note"):
        build_report(
            model="tiny", dataset="digits", method="dense", network=_tiny_net(), mask=None,
            accuracy=accuracy_section({"top1": 0.5, "top5": 0.9}, None), profile=_profile(latency_ms=None), stages=[],
        )
    broken = json.loads(json.dumps(report))
    del broken["profile"]["macs"]
    broken["params"]["total"] = "many"
    with pytest.raises(ValueError, match=r"params\.total must be int, got str; missing profile\.macs"):
        check_report(broken)
    broken = json.loads(json.dumps(report))
    broken["accuracy"]["test_top1"] = 75.0
    with pytest.raises(ValueError, match="fraction"):
        check_report(broken)


def test_top5_with_fewer_than_five_classes_has_a_note() -> None:
    section = accuracy_section({"top1": 0.5, "top5": None}, None)
    assert section["test_top5"] is None and "5 classes" in section["notes"]["test_top5"]


def test_to_jsonable_makes_plain_json() -> None:
    data = to_jsonable({"a": torch.tensor(0.5), "b": float("nan"), "c": (1, Path("x")), 3: torch.device("cpu")})
    assert data == {"a": 0.5, "b": None, "c": [1, "x"], "3": "cpu"}
    with pytest.raises(TypeError, match="cannot store"):
        to_jsonable({"module": nn.ReLU()})


def test_write_report_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _report("dense", 0.0, 0.75)
    write_report(first, tmp_path)
    assert load_report(tmp_path) == first
    assert (tmp_path / REPORT_MD).read_text().startswith("# tiny on digits: dense")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_report(_report("other", 0.5, 0.5), tmp_path)
    assert load_report(tmp_path) == first, "a failed write must leave the previous report intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == [REPORT_JSON, REPORT_MD]


def test_missing_report_names_the_directory_and_the_callback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(FileNotFoundError, match="ProfilingCallback") as excinfo:
        load_report(tmp_path)
    assert str(tmp_path) in str(excinfo.value)
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert str(tmp_path) in error and "ProfilingCallback" in error


def test_epoch_series_uses_the_logged_epoch_else_the_step(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    logger.log_metrics({"val/top1": 0.5, "epoch": 0}, step=9)
    logger.log_metrics({"val/top1": 0.7, "epoch": 1}, step=19)
    logger.log_metrics({"val/top1": 0.6, "epoch": 1}, step=19)
    logger.log_metrics({"lth/round_1/val_top1": 0.4}, step=0)
    logger.log_metrics({"lth/round_1/val_top1": 0.8}, step=1)
    logger.finalize("success")
    scalars = read_scalars(logger.log_dir)
    assert epoch_series(scalars, "val/top1") == [(0.0, 0.5), (1.0, pytest.approx(0.6))]
    assert epoch_series(scalars, "lth/round_1/val_top1") == [(0.0, pytest.approx(0.4)), (1.0, pytest.approx(0.8))]
    assert epoch_series(scalars, "absent") == []
    assert read_scalars(tmp_path) == {}
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "nowhere")


@pytest.fixture
def three_runs(tmp_path: Path) -> Path:
    stages = [
        {"name": "baseline", "epoch": 1, "sparsity": None, "val_top1": 0.80},
        {"name": "pruned", "epoch": 1, "sparsity": 0.9, "val_top1": 0.40},
        {"name": "fine_tuned", "epoch": 3, "sparsity": 0.9, "val_top1": 0.78},
    ]
    curves = {"val/top1": [0.5, 0.7, 0.8], "val/loss": [1.5, 1.0, 0.8], "train/loss_epoch": [2.0, 1.2, 0.9]}
    _write_run(tmp_path / "logs", "dense", _report("dense", 0.0, 0.82), curves)
    _write_run(
        tmp_path / "logs",
        "magnitude",
        _report(
            "magnitude one_shot global 90%", 0.9, 0.79, stages, sparse_size_mb=0.25, nonzero_macs=200_000, latency_ms=12.0
        ),
        {**curves, "lth/round_1/val_top1": [0.3, 0.6], "lth/round_2/val_top1": [0.4, 0.7]},
    )
    _write_run(
        tmp_path / "logs",
        "magnitude50",
        _report("magnitude one_shot global 50%", 0.5, 0.81, device="cuda:0"),
        curves,
    )
    return tmp_path


def test_compare_writes_table_with_deltas_and_plots(three_runs: Path) -> None:
    written = compare_runs([str(three_runs / "logs" / "*" / "version_0")], three_runs / "out")
    assert [p.name for p in written] == [COMPARISON_MD, *PLOTS]
    for name in PLOTS:
        assert (three_runs / "out" / name).stat().st_size > 20_000, name
    table = (three_runs / "out" / COMPARISON_MD).read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "/version_0 |" in line}
    assert set(rows) == {"dense/version_0", "magnitude/version_0", "magnitude50/version_0"}
    dense = rows["dense/version_0"]
    assert "| dense | 0.00 % |" in dense and dense.endswith("| baseline | baseline | baseline | baseline |")
    pruned = rows["magnitude/version_0"]
    assert "| 89.92 % |" in pruned and "| 79.00 % |" in pruned and "| n/a |" in pruned
    assert pruned.endswith("| -3.00 pp | -75.0 % | -80.0 % | +20.0 % |")
    assert rows["magnitude50/version_0"].endswith("| n/a ‡ |"), "latency on another device is not comparable"
    assert "![accuracy vs sparsity](accuracy_vs_sparsity.png)" in table


def test_without_a_dense_run_deltas_use_the_runs_own_baseline(three_runs: Path) -> None:
    compare_runs([str(three_runs / "logs" / "magnitude")], three_runs / "solo")
    table = (three_runs / "solo" / COMPARISON_MD).read_text()
    row = next(line for line in table.splitlines() if line.startswith("| magnitude/version_0"))
    assert row.endswith("| -1.00 pp† | -75.0 %† | -80.0 %† | n/a |")
    assert "† no dense run" in table


def test_run_dirs_expand_globs_and_parent_directories(three_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = three_runs / "logs"
    (logs / "crashed" / "version_0").mkdir(parents=True)
    runs = expand_run_dirs([str(logs / "*" / "version_0"), str(logs / "dense" / "version_0")])
    assert [p.parent.name for p in runs] == ["dense", "magnitude", "magnitude50"]
    assert "skipping" in capsys.readouterr().out
    assert [p.parent.name for p in expand_run_dirs([str(logs / "magnitude")])] == ["magnitude"]
    with pytest.raises(ValueError, match="matches no directory"):
        expand_run_dirs([str(logs / "nothing*")])
    with pytest.raises(FileNotFoundError, match="crashed"):
        load_runs([str(logs / "crashed" / "version_0")])


def test_lit_prune_report_on_two_digits_runs(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profiler = {
        "class_path": "callbacks.profiling.ProfilingCallback",
        "init_args": {
            "batch_size": 16, "latency_warmup": 0, "latency_repeats": 1, "energy_repeats": 1, "max_eval_batches": 1
        },
    }
    pruning = {
        "class_path": "callbacks.magnitude_pruning.MagnitudePruning",
        "init_args": {"target_sparsity": 0.9, "schedule": "one_shot", "start_epoch": 1, "eval_batches": 1},
    }
    tiny = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false"]
    for name, callbacks, epochs in (("dense", [profiler], 1), ("pruned", [pruning, profiler], 2)):
        overlay = in_tmp_dir / f"{name}.yaml"
        overlay.write_text(json.dumps({"trainer": {"callbacks": callbacks, "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "lightning_logs", "name": name},
        }}}))
        run_cli(["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--config", str(overlay),
                 f"--trainer.max_epochs={epochs}", *tiny])
    capsys.readouterr()
    written = report_main(["lightning_logs/*/version_0", "--output", "comparison"])
    out = capsys.readouterr().out
    assert [p.name for p in written] == [COMPARISON_MD, *PLOTS]
    for path in written:
        assert f"wrote {path}" in out
        assert path.stat().st_size > (500 if path.suffix == ".md" else 20_000)
    table = (in_tmp_dir / "comparison" / COMPARISON_MD).read_text()
    assert "| dense/version_0 | resnet20 | digits | dense | 0.00 % |" in table
    pruned_row = next(line for line in table.splitlines() if line.startswith("| pruned/version_0"))
    assert "| 90.00 % |" in pruned_row and "baseline" not in pruned_row
    pruned = json.loads((in_tmp_dir / "lightning_logs" / "pruned" / "version_0" / REPORT_JSON).read_text())
    assert [stage["name"] for stage in pruned["stages"]] == ["baseline", "pruned", "fine_tuned"]
    assert pruned["profile"]["sparse_size_mb"] < pruned["profile"]["size_mb"]
    assert 0.0 <= pruned["accuracy"]["test_top1"] <= 1.0

