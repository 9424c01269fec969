"""Tests of ``ProfilingCallback`` on tiny runs over the offline digits data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from callbacks.base import PruningCallback
from callbacks.profiling import ProfilingCallback
from datamodules import DigitsDataModule
from lit_prune.module import ImageClassifier
from lit_prune.profiling import discover_energy_counters, evaluate_topk
from lit_prune.pruning import global_prune_mask, magnitude_scores, prunable_parameters
from lit_prune.report import REPORT_JSON, REPORT_MD
from lit_prune.tensorboard_scalars import read_scalars

PROFILE_BATCH = 16
EVAL_BATCHES = 2
DIGITS_BATCH = 32
CONTRACT = {
    "model",
    "dataset",
    "method",
    "sparsity",
    "params",
    "accuracy",
    "profile",
    "stages",
}
PROFILE_CONTRACT = {
    "latency_ms",
    "peak_memory_mb",
    "avg_memory_mb",
    "energy_mj",
    "energy_note",
    "macs",
    "nonzero_macs",
    "size_mb",
    "sparse_size_mb",
    "device",
    "batch_size",
}


class DescribedPruning(PruningCallback):
    """Stands for a pruning callback: only describes its method."""

    def describe_method(self) -> str:
        return "magnitude one_shot global 90%"


def _profiler(**overrides: Any) -> ProfilingCallback:
    options = dict(
        batch_size=PROFILE_BATCH, latency_warmup=1, latency_repeats=2, energy_repeats=1, max_eval_batches=EVAL_BATCHES
    )
    options.update(overrides)
    return ProfilingCallback(**options)


def _trainer(root: Path, name: str, callbacks: list[Callback]) -> Trainer:
    return Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        limit_test_batches=2,
        logger=TensorBoardLogger(str(root), name=name),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
    )


def _read(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / REPORT_JSON).read_text())


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, ImageClassifier, DigitsDataModule]:
    torch.manual_seed(0)
    model = ImageClassifier("resnet20", num_classes=10)
    data = DigitsDataModule(batch_size=DIGITS_BATCH)
    trainer = _trainer(tmp_path_factory.mktemp("dense"), "dense", [_profiler()])
    trainer.fit(model, data)
    return trainer, model, data


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, ImageClassifier, dict[str, Any]]:
    torch.manual_seed(0)
    model = ImageClassifier("resnet20", num_classes=10)
    model.set_pruning_mask(global_prune_mask(magnitude_scores(prunable_parameters(model.network)), 0.9))
    data = DigitsDataModule(batch_size=DIGITS_BATCH)
    callbacks = [DescribedPruning(), _profiler(sparse_inference=True)]
    trainer = _trainer(tmp_path_factory.mktemp("pruned"), "pruned", callbacks)
    trainer.fit(model, data)
    after_fit = _read(trainer.log_dir)
    trainer.test(model, data)
    return trainer, model, after_fit


def test_report_has_the_contract_keys_with_their_types(dense_run: tuple[Trainer, ImageClassifier, Any]) -> None:
    trainer, _, _ = dense_run
    report = _read(trainer.log_dir)
    assert CONTRACT <= set(report)
    assert (report["model"], report["dataset"], report["method"]) == ("resnet20", "digits", "dense")
    assert report["trigger"] == "fit" and report["run_dir"] == trainer.log_dir
    assert report["sparsity"]["global"] == 0.0 and report["sparsity"]["source"] == "zero weights"
    assert isinstance(report["sparsity"]["layers"], dict) and "fc.weight" in report["sparsity"]["layers"]
    assert report["params"]["total"] == report["params"]["nonzero"] == 272_474
    accuracy = report["accuracy"]
    assert {"test_top1", "test_top5", "train_top1", "train_top5"} <= set(accuracy)
    for key in ("test_top1", "test_top5", "train_top1", "train_top5"):
        assert isinstance(accuracy[key], float) and 0.0 <= accuracy[key] <= 1.0, key
    assert accuracy["test_top1"] <= accuracy["test_top5"]
    assert accuracy["test_samples"] == accuracy["train_samples"] == EVAL_BATCHES * DIGITS_BATCH
    profile = report["profile"]
    assert PROFILE_CONTRACT <= set(profile)
    for key in ("latency_ms", "peak_memory_mb", "avg_memory_mb", "size_mb", "sparse_size_mb"):
        assert isinstance(profile[key], float) and profile[key] > 0.0, key
    assert isinstance(profile["macs"], int) and profile["macs"] > 40_000_000
    assert profile["nonzero_macs"] == profile["macs"]
    assert profile["latency_min_ms"] <= profile["latency_ms"] <= profile["latency_max_ms"]
    assert profile["peak_memory_mb"] >= profile["avg_memory_mb"]
    assert (profile["device"], profile["batch_size"], profile["input_shape"]) == ("cpu", PROFILE_BATCH, [3, 32, 32])
    assert profile["sparse_inference"] is None and "not requested" in profile["notes"]["sparse_inference"]
    assert report["stages"] == []
    markdown = (Path(trainer.log_dir) / REPORT_MD).read_text()
    assert markdown.startswith("# resnet20 on digits: dense")
    assert "## Accuracy" in markdown and "## Profile" in markdown and f"{100 * accuracy['test_top1']:.2f} %" in markdown


def test_accuracy_after_fit_is_the_final_model_on_transformed_test_batches(
    dense_run: tuple[Trainer, ImageClassifier, DigitsDataModule],
) -> None:
    trainer, model, data = dense_run
    batches = []
    for index, batch in enumerate(data.test_dataloader()):
        if index == EVAL_BATCHES:
            break
        batches.append(data.transform_batch(batch, train=False))
    expected = evaluate_topk(model.network, batches)
    accuracy = _read(trainer.log_dir)["accuracy"]
    assert accuracy["test_top1"] == pytest.approx(expected["top1"])
    assert accuracy["test_top5"] == pytest.approx(expected["top5"])


def test_energy_is_null_with_a_note_where_no_counter_is_readable(dense_run: tuple[Trainer, Any, Any]) -> None:
    trainer, _, _ = dense_run
    profile = _read(trainer.log_dir)["profile"]
    counters, reasons = discover_energy_counters()
    if counters:
        assert profile["energy_mj"] > 0.0 and profile["energy_note"].startswith("measured with")
    else:
        assert profile["energy_mj"] is None
        assert profile["energy_note"].startswith("unavailable") and "RAPL" in profile["energy_note"]
        assert profile["notes"]["energy_mj"] == profile["energy_note"]
        assert all(reason.split(":")[0] in profile["energy_note"] for reason in reasons)


def test_profile_is_logged_to_tensorboard(dense_run: tuple[Trainer, Any, Any]) -> None:
    trainer, _, _ = dense_run
    report = _read(trainer.log_dir)
    scalars = read_scalars(trainer.log_dir)
    assert scalars["profile/macs"][-1].value == pytest.approx(report["profile"]["macs"], rel=1e-6)
    assert scalars["profile/latency_ms"][-1].value == pytest.approx(report["profile"]["latency_ms"], rel=1e-6)
    assert scalars["profile/test_top1"][-1].value == pytest.approx(report["accuracy"]["test_top1"], rel=1e-6)
    assert "profile/energy_mj" not in scalars or report["profile"]["energy_mj"] is not None


def test_sparse_size_is_below_dense_size_at_90_percent_sparsity(
    pruned_run: tuple[Trainer, Any, dict[str, Any]],
) -> None:
    _, _, report = pruned_run
    assert report["method"] == "magnitude one_shot global 90%"
    assert report["sparsity"]["source"] == "mask"
    assert report["sparsity"]["global"] == pytest.approx(0.9, abs=1e-4)
    profile = report["profile"]
    assert profile["sparse_size_mb"] < 0.4 * profile["size_mb"]
    assert profile["nonzero_macs"] < 0.3 * profile["macs"]
    assert report["params"]["nonzero"] < 0.2 * report["params"]["total"]


def test_sparse_inference_is_measured_and_matches_the_dense_model(
    pruned_run: tuple[Trainer, Any, dict[str, Any]],
) -> None:
    _, _, report = pruned_run
    sparse = report["profile"]["sparse_inference"]
    assert sparse["latency_ms"] > 0.0
    assert sparse["latency_ratio_vs_dense"] == pytest.approx(sparse["latency_ms"] / report["profile"]["latency_ms"])
    assert sparse["max_abs_logit_difference"] < 1e-4
    assert "fc" in sparse["sparse_layers"] and "layer1.0.conv1" in sparse["sparse_layers"]
    for key in ("peak_memory_mb", "energy_mj"):
        assert sparse[key] is not None or sparse["notes"].get(key) or sparse["energy_note"]


def test_after_test_the_report_takes_the_logged_test_metrics(pruned_run: tuple[Trainer, Any, Any]) -> None:
    trainer, _, _ = pruned_run
    report = _read(trainer.log_dir)
    assert report["trigger"] == "test"
    assert report["accuracy"]["test_top1"] == pytest.approx(float(trainer.callback_metrics["test/top1"]))
    assert report["accuracy"]["test_top5"] == pytest.approx(float(trainer.callback_metrics["test/top5"]))
    assert 0.0 <= report["accuracy"]["train_top1"] <= 1.0, "the final model's train accuracy is in every report"
    assert report["accuracy"]["train_samples"] == EVAL_BATCHES * DIGITS_BATCH


def test_train_accuracy_can_be_skipped_and_says_so(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageClassifier("resnet20", num_classes=10)
    trainer = _trainer(tmp_path, "no_train", [_profiler(train_accuracy=False, latency_repeats=1)])
    trainer.test(model, DigitsDataModule(batch_size=DIGITS_BATCH))
    report = _read(trainer.log_dir)
    assert report["accuracy"]["train_top1"] is None and "train_accuracy" in report["accuracy"]["notes"]["train_top1"]


def test_reduction_is_against_the_unpruned_architecture(
    dense_run: tuple[Trainer, Any, Any], pruned_run: tuple[Trainer, Any, dict[str, Any]]
) -> None:
    dense = _read(dense_run[0].log_dir)
    reduction = dense["reduction"]
    assert reduction["reference"] == "resnet20 with 10 classes, built afresh from the model registry"
    assert reduction["params_unpruned"] == dense["params"]["unpruned"] == 272_474
    assert reduction["removed_fraction"] == 0.0 and reduction["overall_reduction"] == pytest.approx(0.0, abs=1e-3)
    assert reduction["macs_unpruned"] == reduction["macs"] == dense["profile"]["macs"]
    assert reduction["reference_latency_ms"] > 0.0 and reduction["measured_speedup"] > 0.0
    assert dense["weights"]["kind"] == "random"
    pruned = pruned_run[2]["reduction"]
    assert pruned["removed_fraction"] == 0.0
    assert pruned["zeroed_fraction"] == pytest.approx(0.9 * 270_896 / 272_474, abs=2e-4)
    assert pruned["overall_reduction"] == pytest.approx(pruned["zeroed_fraction"])
    assert pruned["theoretical_speedup"] == pytest.approx(pruned["macs_unpruned"] / pruned["nonzero_macs"])
    assert pruned["theoretical_speedup"] > 3.0 and pruned["dense_kernel_speedup"] == pytest.approx(1.0)
    scalars = read_scalars(dense_run[0].log_dir)
    assert scalars["profile/overall_reduction"][-1].value == pytest.approx(reduction["overall_reduction"], abs=1e-6)


def test_only_global_rank_zero_profiles_and_writes(
    pruned_run: tuple[Trainer, ImageClassifier, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, model, _ = pruned_run
    profiler = next(c for c in trainer.callbacks if isinstance(c, ProfilingCallback))
    run_dir = Path(trainer.log_dir)
    report_path = run_dir / REPORT_JSON
    report_path.unlink()
    calls: list[str] = []
    original = ProfilingCallback.write_run_report

    def spy(self: ProfilingCallback, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["trigger"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ProfilingCallback, "write_run_report", spy)
    monkeypatch.setattr(Trainer, "is_global_zero", property(lambda self: False))
    profiler.on_fit_end(trainer, model)
    profiler.on_test_end(trainer, model)
    assert calls == [] and not report_path.exists()

    def collective(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a collective call inside rank-zero-only code deadlocks DDP")

    strategy_type = type(trainer.strategy)
    for name in ("broadcast", "barrier", "all_gather", "reduce", "reduce_boolean_decision"):
        monkeypatch.setattr(strategy_type, name, collective)
    monkeypatch.setattr(Trainer, "is_global_zero", property(lambda self: True))
    profiler.on_fit_end(trainer, model)
    assert calls == ["fit"] and _read(run_dir)["trigger"] == "fit"
    assert not list(run_dir.glob(".*.tmp")), "a temporary file was left behind"


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"latency_repeats": 0}, ValueError, "latency_repeats"),
        ({"max_eval_batches": 0}, ValueError, "max_eval_batches"),
        ({"train_accuracy": "yes"}, TypeError, "train_accuracy"),
        ({"device": "gpu0"}, TypeError, "device"),
    ],
)
def test_bad_options_are_clear_errors(options: dict[str, Any], error: type[Exception], names: str) -> None:
    with pytest.raises(error, match=names):
        ProfilingCallback(**options)
