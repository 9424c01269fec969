"""Tests of the run report (lit_prune.report), the comparison (`lit-prune report`) and event reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

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
from lit_prune.report.comparison import COMPARISON_MD, compare_runs
from lit_prune.report.comparison import main as report_main
from lit_prune.report.formatting import format_percent
from lit_prune.report.plots import (
    ACCURACY_VS_EPOCH,
    ACCURACY_VS_SPARSITY,
    LOSS_VS_EPOCH,
    reduction_figure,
    run_colors,
    training_curves_figure,
)
from lit_prune.report.reduction import REDUCTION_KEYS
from lit_prune.report.runs import expand_run_dirs, load_runs
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
    measured = _profile(**profile)
    return build_report(
        model="tiny",
        dataset="digits",
        method=method,
        network=net,
        mask=mask,
        accuracy=accuracy_section({"top1": top1, "top5": 1.0}, None, train_note="not measured"),
        profile=measured,
        stages=stages or [],
        reduction=_reduction(net, measured),
    )


def _reduction(net: nn.Module, profile: dict[str, Any]) -> dict[str, Any]:
    """A reduction section whose unpruned reference is the dense tiny net: 1M MACs, 1 MiB, 10 ms."""
    total = sum(p.numel() for p in net.parameters())
    nonzero = sum(int(p.count_nonzero()) for p in net.parameters())
    section: dict[str, Any] = {key: None for key in REDUCTION_KEYS}
    section.update(
        reference="dense tiny net", params_unpruned=total, params_total=total, params_nonzero=nonzero,
        removed_fraction=0.0, zeroed_fraction=(total - nonzero) / total, overall_reduction=(total - nonzero) / total,
        compression_ratio=total / nonzero, macs_unpruned=1_000_000, macs=profile["macs"],
        nonzero_macs=profile["nonzero_macs"], macs_reduction=1 - profile["nonzero_macs"] / 1_000_000,
        theoretical_speedup=1_000_000 / profile["nonzero_macs"], dense_kernel_speedup=1_000_000 / profile["macs"],
        size_unpruned_mb=1.0, size_mb=profile["size_mb"], sparse_size_mb=profile["sparse_size_mb"],
        reference_latency_ms=10.0, latency_ms=profile["latency_ms"], measured_speedup=10.0 / profile["latency_ms"],
        notes={},
    )  # fmt: skip
    return section


def _rows(table: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under ``## heading``, by run label, as lists of cells."""
    section = table.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and "/version_" in line]
    rows = [line.strip("| ").split(" | ") for line in lines]
    return {cells[0]: cells for cells in rows}


def _write_run(root: Path, name: str, report: dict[str, Any], curves: dict[str, list[float]]) -> Path:
    """A run directory with a report and TensorBoard scalars logged like Lightning does (with ``epoch``)."""
    logger = TensorBoardLogger(str(root), name=name, version=0)
    step = 0
    for epoch in range(max(len(values) for values in curves.values())):
        step += 5
        metrics = {tag: values[epoch] for tag, values in curves.items() if epoch < len(values) and "/round_" not in tag}
        logger.log_metrics({**metrics, "epoch": epoch}, step=step)
    for tag, values in curves.items():
        if "/round_" in tag:  # as LotteryTicket logs them: against the epoch within the round
            for epoch, value in enumerate(values):
                logger.log_metrics({tag: value}, step=epoch)
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
    import lit_prune.report.measurement as measurement_module

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no timer")

    monkeypatch.setattr(measurement_module, "measure_latency", broken)
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
            model="tiny",
            dataset="digits",
            method="dense",
            network=_tiny_net(),
            mask=None,
            accuracy=accuracy_section({"top1": 0.5, "top5": 0.9}, None),
            profile=_profile(latency_ms=None),
            stages=[],
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
            "magnitude one_shot global 90%",
            0.9,
            0.79,
            stages,
            sparse_size_mb=0.25,
            nonzero_macs=200_000,
            latency_ms=12.0,
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


def test_compare_writes_tables_with_deltas_against_the_dense_run(three_runs: Path) -> None:
    written = compare_runs([str(three_runs / "logs" / "*" / "version_0")], three_runs / "out")
    assert [p.name for p in written] == [COMPARISON_MD, *PLOTS]
    for name in PLOTS:
        assert (three_runs / "out" / name).stat().st_size > 20_000, name
    table = (three_runs / "out" / COMPARISON_MD).read_text()
    reduction = _rows(table, "Accuracy and parameter reduction")
    cost = _rows(table, "Measured cost")
    assert set(reduction) == set(cost) == {"dense/version_0", "magnitude/version_0", "magnitude50/version_0"}
    dense = reduction["dense/version_0"]
    assert dense[3] == "dense" and dense[7] == "reference" and dense[-1] == "reference"
    assert dense[9:12] == ["0.00 %", "0.00 %", "0.00 %"]
    pruned = reduction["magnitude/version_0"]
    # tiny net: 216 + 32 prunable weights, 223 of them pruned (90 %), 260 parameters in all
    assert pruned[5] == "79.00 %" and pruned[7] == "-3.00 pp"
    assert pruned[8] == "37 / 260 / 260"
    assert pruned[9:12] == ["0.00 %", "85.77 %", "85.77 %"]
    assert pruned[12] == "200.00 k / 1.00 M / 1.00 M" and pruned[13] == "5.00×"
    assert cost["magnitude/version_0"][2:5] == ["-75.0 %", "12.00", "0.83×"]
    assert cost["magnitude50/version_0"][4] == "n/a‡", "latency on another device is not comparable"
    assert "- magnitude/version_0: against the dense run dense/version_0" in table
    assert "‡ latency measured on another device" in table and "†" not in table
    assert "![accuracy vs sparsity](accuracy_vs_sparsity.png)" in table


def test_without_a_dense_run_the_unpruned_architecture_is_the_reference(three_runs: Path) -> None:
    compare_runs([str(three_runs / "logs" / "magnitude")], three_runs / "solo")
    table = (three_runs / "solo" / COMPARISON_MD).read_text()
    row = _rows(table, "Accuracy and parameter reduction")["magnitude/version_0"]
    assert row[7] == "-1.00 pp†" and row[13] == "5.00×†"
    assert _rows(table, "Measured cost")["magnitude/version_0"][2:5] == ["-75.0 %†", "12.00", "0.83×†"]
    assert "no dense run given: against its own unpruned architecture †" in table
    assert "† no dense run of this model and dataset was given" in table


def test_a_report_without_reduction_section_still_compares(three_runs: Path) -> None:
    old = json.loads((three_runs / "logs" / "magnitude50" / "version_0" / REPORT_JSON).read_text())
    del old["reduction"], old["params"]["unpruned"]
    (three_runs / "logs" / "magnitude50" / "version_0" / REPORT_JSON).write_text(json.dumps(old))
    compare_runs([str(three_runs / "logs" / "*" / "version_0")], three_runs / "old")
    table = (three_runs / "old" / COMPARISON_MD).read_text()
    row = _rows(table, "Accuracy and parameter reduction")["magnitude50/version_0"]
    assert row[9:12] == ["n/a", "n/a", "n/a"] and row[8].endswith("/ n/a§")
    assert "§ this report has no reduction section" in table


def _legend_texts(figure: Any) -> list[str]:
    (legend,) = figure.legends
    return [" ".join(text.get_text().split()) for text in legend.get_texts()]


def test_figures_keep_one_colour_per_run_and_every_curve_in_the_legend(three_runs: Path) -> None:
    runs = load_runs([str(three_runs / "logs" / "*" / "version_0")])
    colors = run_colors(runs)
    assert len(set(colors.values())) == len(runs)
    curves = training_curves_figure(runs, "accuracy", colors)
    figures = [curves, training_curves_figure(runs, "loss", colors), reduction_figure(runs, colors)]
    for figure in figures:
        texts = _legend_texts(figure)
        labelled = [line for axis in figure.axes for line in axis.get_lines() if not line.get_label().startswith("_")]
        assert {" ".join(line.get_label().split()) for line in labelled} <= set(texts), "a curve is not in the legend"
        for run in runs:
            own = [line for line in labelled if line.get_label().startswith(run.label)]
            assert own and {line.get_color() for line in own} == {colors[run.label]}, run.label
    assert "magnitude/version_0: magnitude one_shot global 90% (test)" in _legend_texts(figures[2])
    assert "magnitude50/version_0: magnitude one_shot global 50%" in _legend_texts(curves)
    global_axes, round_axis = curves.axes[:2], curves.axes[2]
    assert [axis.get_xlabel() for axis in curves.axes] == ["Epoch", "Epoch", "Epoch within the round"]
    assert all(axis.get_ylabel() == "Top-1 accuracy (%)" for axis in curves.axes)
    assert figures[2].axes[0].get_xlabel().startswith("Overall parameter reduction (%")
    round_lines = [line.get_label() for line in round_axis.get_lines()]
    assert round_lines == ["magnitude/version_0 · round 1", "magnitude/version_0 · round 2"]
    assert not any("round" in line.get_label() for axis in global_axes for line in axis.get_lines())
    assert [line.get_xdata().tolist() for line in round_axis.get_lines()] == [[1.0, 2.0], [1.0, 2.0]]


def test_legends_with_many_runs_stay_below_the_axes(tmp_path: Path) -> None:
    for index in range(12):
        report = _report(f"magnitude one_shot global {5 * index}% with a long description of its schedule", 0.0, 0.5)
        curves = {"val/top1": [0.2, 0.4], "train/loss_epoch": [2.0, 1.0]}
        _write_run(tmp_path / "logs", f"run{index:02d}", report, curves)
    runs = load_runs([str(tmp_path / "logs")])
    colors = run_colors(runs)
    assert len(set(colors.values())) == 12
    for figure in (training_curves_figure(runs, "accuracy", colors), reduction_figure(runs, colors)):
        renderer = figure.canvas.get_renderer()
        figure.canvas.draw()
        legend = figure.legends[0].get_window_extent(renderer)
        for axis in figure.axes:
            box = axis.get_tightbbox(renderer)
            assert legend.y1 <= box.y0 + 1, "the legend overlaps an axis or its labels"
        assert legend.x0 >= 0 and legend.x1 <= figure.bbox.x1 and legend.y0 >= 0, "the legend is cut off"
        assert any("55%" in text for text in _legend_texts(figure)), "percentages stay in the legend"


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


LIT_PRUNE = Path(sys.executable).with_name("lit-prune")
DIGITS = ["--data", "{class_path: datamodules.DigitsDataModule, init_args: {batch_size: 16}}"]
TINY = [
    "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
    "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
]  # fmt: skip


def _lit_prune(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the installed console script as a user does."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [str(LIT_PRUNE), *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600, check=False
    )


def test_lit_prune_report_compares_dense_unstructured_and_channel_pruned_runs(tmp_path: Path) -> None:
    channels = tmp_path / "channels.yaml"
    channels.write_text(json.dumps({"trainer": {
        "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                   "init_args": {"save_dir": "lightning_logs", "name": "channels"}},
        "callbacks": [
            {"class_path": "callbacks.profiling.ProfilingCallback"},
            {"class_path": "callbacks.channel_pruning.ChannelPruning",
             "init_args": {"removed_fraction": 0.3, "fine_tune_epochs": 1, "eval_batches": 1}},
        ],
    }}))  # fmt: skip
    runs = {
        "dense": ["--config", str(CONFIG_DIR / "resnet20_cifar10.yaml"), "--trainer.max_epochs=1"],
        "unstructured": [
            "--config", str(CONFIG_DIR / "e1_oneshot_resnet20_cifar10.yaml"), "--trainer.max_epochs=2",
            "--trainer.callbacks.start_epoch=1", "--trainer.callbacks.eval_batches=1",
        ],
        "channels": [
            "--config", str(CONFIG_DIR / "resnet20_cifar10.yaml"), "--config", str(channels), "--trainer.max_epochs=2",
        ],
    }  # fmt: skip
    for name, args in runs.items():
        result = _lit_prune(tmp_path, "fit", *args, *DIGITS, *TINY)
        assert (tmp_path / "lightning_logs").is_dir(), result.stderr[-3000:]
        assert "report.json" in result.stdout + result.stderr, f"{name}: {result.stderr[-3000:]}"
        assert result.returncode == 0, f"{name}: exit status {result.returncode}: {result.stderr[-2000:]}"
    dense_dir = tmp_path / "lightning_logs" / "resnet20_cifar10" / "version_0"
    dense = json.loads((dense_dir / REPORT_JSON).read_text())
    assert dense["method"] == "dense" and dense["reduction"]["removed_fraction"] == 0.0
    assert dense["accuracy"]["train_top1"] is not None, "the baseline report has the final model's train accuracy"
    result = _lit_prune(
        tmp_path, "report", str(dense_dir), "lightning_logs/e1_oneshot_resnet20_cifar10/version_0",
        "lightning_logs/channels/version_0", "--output", "comparison",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for name in (COMPARISON_MD, *PLOTS):
        assert f"wrote comparison/{name}" in result.stdout
    table = (tmp_path / "comparison" / COMPARISON_MD).read_text()
    reduction = _rows(table, "Accuracy and parameter reduction")
    cost = _rows(table, "Measured cost")
    dense_row = reduction["resnet20_cifar10/version_0"]
    assert dense_row[1:4] == ["resnet20", "digits", "dense"] and dense_row[7] == "reference"
    assert dense_row[8].endswith("/ 272,474 / 272,474")
    unstructured = reduction["e1_oneshot_resnet20_cifar10/version_0"]
    report = json.loads((tmp_path / "lightning_logs/e1_oneshot_resnet20_cifar10/version_0" / REPORT_JSON).read_text())
    # 50 % of the 270,256 conv weights (fc excluded) are zeroed, none removed
    assert report["sparsity"]["global"] == pytest.approx(0.5, abs=1e-5)
    assert unstructured[9] == "0.00 %" and unstructured[10] == unstructured[11] == format_percent(135_128 / 272_474)
    channel = reduction["channels/version_0"]
    pruned = json.loads((tmp_path / "lightning_logs/channels/version_0" / REPORT_JSON).read_text())
    assert pruned["sparsity"]["global"] == 0.0, "mask sparsity alone would say nothing was pruned"
    removed = pruned["reduction"]["removed_fraction"]
    assert removed == pytest.approx(1 - pruned["params"]["total"] / 272_474) and 0.25 < removed < 0.35
    assert channel[9] == format_percent(removed) and channel[11] != "0.00 %"
    assert channel[8] == f"{pruned['params']['nonzero']:,} / {pruned['params']['total']:,} / 272,474"
    base_macs, macs = dense["profile"]["macs"], pruned["profile"]["nonzero_macs"]
    assert channel[13] == f"{base_macs / macs:.2f}×" and base_macs / macs > 1.2
    assert cost["channels/version_0"][4] == f"{dense['profile']['latency_ms'] / pruned['profile']['latency_ms']:.2f}×"
    for row in (unstructured, channel):
        assert row[7].endswith(" pp"), "Δ top-1 against the dense row"
    assert "against the dense run resnet20_cifar10/version_0" in table and "†" not in table
