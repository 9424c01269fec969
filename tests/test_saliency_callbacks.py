"""``SaliencyPruning``: stage triggers (fire at the threshold, once, in order), real runs, resume, bad input."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch

from callbacks.saliency_pruning import SaliencyPruning
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import prunable_parameters, score_registry
from lit_prune.pruning.stages import parse_stages
from tests.pruning_helpers import digits, make_module, make_trainer

E6_STAGES = [
    {"trigger": "val_top1", "value": 0.2, "fraction_of_target": 0.5},
    {"trigger": "val_top1", "value": 0.4, "fraction_of_target": 0.75},
    {"trigger": "val_top1", "value": 0.6, "fraction_of_target": 1.0},
]


class _FakeTrainer(SimpleNamespace):
    """What the callback's hooks read from a Trainer, on one process, with metrics set by the test."""

    def __init__(self, datamodule: Any) -> None:
        super().__init__(
            datamodule=datamodule,
            strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj),
            is_global_zero=True,
            callback_metrics={},
            limit_val_batches=1,
            sanity_checking=False,
            state=SimpleNamespace(fn="fit"),
            current_epoch=0,
        )


def _total(module: ImageClassifier, **selection: Any) -> int:
    return sum(p.numel() for p in prunable_parameters(module.network, **selection).values())


def _pruned_weights_are_zero(module: ImageClassifier) -> bool:
    params = dict(module.network.named_parameters())
    return all(bool((params[name][~keep] == 0).all()) for name, keep in module.pruning_mask.items())


def test_accuracy_trigger_fires_at_its_threshold_and_once_per_stage() -> None:
    torch.manual_seed(0)
    data = digits()
    data.setup("fit")
    trainer = _FakeTrainer(data)
    module = make_module()
    callback = SaliencyPruning(score="magnitude", target_sparsity=0.8, stages=E6_STAGES, eval_batches=1)
    total = _total(module)

    fired = []
    for epoch, accuracy in enumerate([0.1, 0.19, 0.2, 0.35, 0.2, 0.39, 0.95, 0.95, 0.61, 0.7, 0.99]):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/top1": torch.tensor(accuracy)}
        callback.on_validation_end(trainer, module)
        fired.append(callback.stages_done)
    # 0.2 reaches stage 1 exactly at its threshold; 0.95 jumps past both remaining thresholds but
    # fires only stage 2 (one stage per validation); stage 3 fires at the next check; no repeats.
    assert fired == [0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3]
    stages = module.pruning_stages
    assert [s["name"] for s in stages] == ["stage1/pruned", "stage2/pruned", "stage3/pruned"]
    assert [s["val_top1_at_trigger"] for s in stages] == pytest.approx([0.2, 0.95, 0.95])
    assert [s["target_sparsity"] for s in stages] == pytest.approx([0.4, 0.6, 0.8])
    assert module.pruning_mask.num_pruned() == round(0.8 * total)
    assert _pruned_weights_are_zero(module)


def test_no_trigger_during_sanity_check_or_outside_fit() -> None:
    data = digits()
    data.setup("fit")
    trainer = _FakeTrainer(data)
    trainer.callback_metrics = {"val/top1": torch.tensor(0.9)}
    module = make_module()
    callback = SaliencyPruning(score="magnitude", stages=E6_STAGES, eval_batches=1)
    trainer.sanity_checking = True
    callback.on_validation_end(trainer, module)
    trainer.sanity_checking, trainer.state.fn = False, "validate"
    callback.on_validation_end(trainer, module)
    assert callback.stages_done == 0 and module.pruning_mask is None


def test_missing_validation_metric_is_a_clear_error() -> None:
    data = digits()
    data.setup("fit")
    trainer = _FakeTrainer(data)
    trainer.callback_metrics = {"val/loss": torch.tensor(1.0)}
    callback = SaliencyPruning(score="magnitude", stages=E6_STAGES)
    with pytest.raises(RuntimeError, match="val/top1"):
        callback.on_validation_end(trainer, make_module())


def test_grasp_at_init_prunes_before_the_first_step_with_exact_sparsity() -> None:
    L.seed_everything(0)
    module = make_module()
    callback = SaliencyPruning(score="grasp", target_sparsity=0.9, samples_per_class=2, exclude=["fc.weight"])
    make_trainer(None, max_epochs=1, callbacks=[callback]).fit(module, digits())

    first = module.pruning_stages[0]
    assert first["name"] == "stage1/pruned" and first["global_step"] == 0 and first["fired_by"] == "init"
    assert module.pruning_mask.num_pruned() == round(0.9 * _total(module, exclude=["fc.weight"]))
    assert "fc.weight" not in module.pruning_mask
    assert _pruned_weights_are_zero(module), "a pruned weight moved during training"
    assert [s["name"] for s in module.pruning_stages] == ["stage1/pruned", "fine_tuned"]
    assert callback.describe_method() == "GraSP 90% at init"
    assert first["scoring"] == {
        "score": "grasp",
        "bn_mode": "train",
        "dropout": "off",
        "calibration": "class_balanced",
        "samples_per_class": 2,
        "batches": 2,
        "temperature": 200.0,
        "tie_rule": "seeded_random",
        "tie_seed": 0,
    }


@pytest.mark.parametrize(
    ("method", "bn_mode", "halves"),
    [("grasp", "train", [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4], [5, 5, 6, 6, 7, 7, 8, 8, 9, 9]]), ("snip", "eval", None)],
)
def test_scores_get_the_reference_calibration_batches_and_batch_norm_mode(
    method: str, bn_mode: str, halves: list[list[int]] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    registered = score_registry.get_score(method)

    @functools.wraps(registered.function)
    def spy(**inputs: Any) -> Any:
        seen.append({"targets": [t.tolist() for _, t in inputs["batches"]], "bn_mode": inputs["bn_mode"]})
        return registered.function(**inputs)

    monkeypatch.setitem(score_registry._REGISTRY, method, dataclasses.replace(registered, function=spy))
    data = digits()
    data.setup("fit")
    module = make_module()
    callback = SaliencyPruning(score=method, target_sparsity=0.5, samples_per_class=2)
    mask = callback.compute_mask(_FakeTrainer(data), module, 0.5)
    assert mask.num_pruned() == round(0.5 * _total(module))
    (call,) = seen
    assert call["bn_mode"] == bn_mode == callback.scoring_settings()["bn_mode"]
    if halves is None:
        assert call["targets"] == [sorted(call["targets"][0])] and len(call["targets"][0]) == 20, "one batch"
    else:
        assert call["targets"] == halves, "two class-grouped halves in GraSP's reference order"


def test_snip_stages_in_a_real_run_prune_among_survivors_only() -> None:
    L.seed_everything(0)
    module = make_module()
    masks = []

    class _Spy(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
            masks.append(pl_module.pruning_mask.state_dict())

    stages = [
        {"trigger": "val_top1", "value": 0.01, "fraction_of_target": 0.5},
        {"trigger": "epoch", "value": 2, "fraction_of_target": 1.0},
    ]
    callback = SaliencyPruning(score="snip", target_sparsity=0.8, stages=stages, calibration_batches=1)
    make_trainer(None, max_epochs=3, callbacks=[callback, _Spy()]).fit(module, digits())

    pruned = [s for s in module.pruning_stages if s["name"].endswith("/pruned")]
    assert [(s["epoch"], s["fired_by"]) for s in pruned] == [(0, "val_top1"), (2, "epoch")]
    assert [s["global_step"] for s in pruned] == [3, 6]
    assert [round(s["selected_sparsity"], 4) for s in pruned] == [0.4, 0.8]
    assert pruned[0]["scoring"] == {
        "score": "snip",
        "bn_mode": "eval",
        "dropout": "off",
        "calibration": "loader_batches",
        "calibration_batches": 1,
        "batches": 1,
        "tie_rule": "seeded_random",
        "tie_seed": 0,
    }
    for name, keep in masks[0].items():
        assert torch.equal(masks[1][name], keep), f"{name}: the mask moved between stages"
        assert not (masks[2][name] & ~keep).any(), f"{name}: stage 2 revived a weight pruned by stage 1"


def test_synflow_at_init_reaches_the_target() -> None:
    L.seed_everything(0)
    module = make_module()
    callback = SaliencyPruning(score="synflow", target_sparsity=0.75, synflow_iterations=3)
    make_trainer(None, max_epochs=1, limit_train_batches=1, callbacks=[callback]).fit(module, digits())
    assert module.pruning_mask.num_pruned() == round(0.75 * _total(module))


def _stages_for_resume() -> SaliencyPruning:
    stages = [
        {"trigger": "val_top1", "value": 0.01, "fraction_of_target": 0.5},
        {"trigger": "val_top1", "value": 0.02, "fraction_of_target": 1.0},
    ]
    return SaliencyPruning(score="magnitude", target_sparsity=0.8, stages=stages)


def test_resume_after_an_accuracy_stage_neither_repeats_nor_skips(
    tmp_path: Path, interrupted_fit: Callable[..., Path]
) -> None:
    L.seed_everything(0)
    uninterrupted = make_module()
    make_trainer(tmp_path / "a", max_epochs=3, callbacks=[_stages_for_resume()]).fit(uninterrupted, digits())

    L.seed_everything(0)
    first = make_module()
    with pytest.warns(UserWarning, match="fired 1 of 2 stages"):
        last = interrupted_fit(first, [_stages_for_resume()], max_epochs=3, stop_after_epoch=0, datamodule=digits())
    assert [s["name"] for s in first.pruning_stages] == ["stage1/pruned", "fine_tuned"]

    L.seed_everything(123)
    resumed = make_module()
    callback = _stages_for_resume()
    make_trainer(tmp_path / "c", max_epochs=3, callbacks=[callback]).fit(resumed, digits(), ckpt_path=last)
    assert callback.stages_done == 2
    names = [s["name"] for s in resumed.pruning_stages]
    assert names == [s["name"] for s in uninterrupted.pruning_stages]
    assert names == ["stage1/pruned", "stage2/pruned", "fine_tuned"]
    assert [s["epoch"] for s in resumed.pruning_stages] == [s["epoch"] for s in uninterrupted.pruning_stages]
    assert resumed.pruning_mask.equals(uninterrupted.pruning_mask)


def test_unfired_stages_are_reported() -> None:
    L.seed_everything(0)
    module = make_module()
    stages = [
        {"trigger": "init", "fraction_of_target": 0.5},
        {"trigger": "val_top1", "value": 1.0, "fraction_of_target": 1.0},
    ]
    callback = SaliencyPruning(score="magnitude", target_sparsity=0.6, stages=stages)
    with pytest.warns(UserWarning, match="fired 1 of 2 stages"):
        make_trainer(None, max_epochs=1, callbacks=[callback]).fit(module, digits())
    assert module.pruning_mask.sparsity() == pytest.approx(0.3, abs=1e-5)


def test_latest_epoch_fires_a_stage_whose_accuracy_was_not_reached() -> None:
    L.seed_everything(0)
    module = make_module()
    stages = [{"trigger": "val_top1", "value": 1.0, "fraction_of_target": 1.0, "latest_epoch": 1}]
    callback = SaliencyPruning(score="magnitude", target_sparsity=0.5, stages=stages)
    make_trainer(None, max_epochs=2, callbacks=[callback]).fit(module, digits())
    stage = module.pruning_stages[0]
    assert (stage["epoch"], stage["fired_by"]) == (1, "latest_epoch")


def test_parse_stages_defaults_to_one_stage_at_init() -> None:
    (stage,) = parse_stages(None)
    assert (stage.trigger, stage.value, stage.fraction_of_target) == ("init", None, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"score": "obd"}, ValueError, "snip"),
        ({"target_sparsity": 0.0}, ValueError, r"\(0, 1\)"),
        ({"target_sparsity": 1.0}, ValueError, r"\[0, 1\)"),
        ({"stages": []}, ValueError, "non-empty list"),
        ({"stages": [{"trigger": "loss", "value": 1, "fraction_of_target": 1.0}]}, ValueError, "init"),
        ({"stages": [{"trigger": "val_top1", "value": 20, "fraction_of_target": 1.0}]}, ValueError, "0.2 for 20"),
        ({"stages": [{"trigger": "epoch", "value": -1, "fraction_of_target": 1.0}]}, ValueError, ">= 0"),
        ({"stages": [{"trigger": "init", "value": 3, "fraction_of_target": 1.0}]}, ValueError, "no value"),
        (
            {"stages": [{"trigger": "epoch", "value": 1, "fraction_of_target": 1.0, "when": 2}]},
            ValueError,
            "unknown keys",
        ),
        ({"stages": [{"trigger": "init", "fraction": 1.0}]}, ValueError, "fraction was renamed fraction_of_target"),
        (
            {"stages": [{"trigger": "epoch", "value": 1, "fraction_of_target": 1.0, "latest_epoch": 3}]},
            ValueError,
            "val_top1",
        ),
        ({"stages": [{"trigger": "epoch", "value": 1, "fraction_of_target": 0.8}]}, ValueError, "last must be 1.0"),
        ({"stages": E6_STAGES[::-1]}, ValueError, "increase strictly"),
        (
            {
                "stages": [
                    {"trigger": "epoch", "value": 5, "fraction_of_target": 0.5},
                    {"trigger": "epoch", "value": 3, "fraction_of_target": 1.0},
                ]
            },
            ValueError,
            "epoch values",
        ),
        (
            {
                "stages": [
                    {"trigger": "val_top1", "value": 0.5, "fraction_of_target": 0.5},
                    {"trigger": "val_top1", "value": 0.3, "fraction_of_target": 1.0},
                ]
            },
            ValueError,
            "val_top1 values",
        ),
        (
            {
                "stages": [
                    {"trigger": "epoch", "value": 0, "fraction_of_target": 0.5},
                    {"trigger": "init", "fraction_of_target": 1.0},
                ]
            },
            ValueError,
            "first stage",
        ),
        ({"samples_per_class": 5, "calibration_batches": 2}, ValueError, "not both"),
        ({"samples_per_class": 0}, ValueError, ">= 1"),
        ({"score": "synflow", "samples_per_class": 10}, ValueError, "no calibration data"),
        ({"temperature": 0}, ValueError, "positive"),
        ({"bn_mode": "batch"}, UserError, r"bn_mode must be one of \['eval', 'train'\]"),
        ({"score": "synflow", "bn_mode": "eval"}, UserError, "bn_mode applies to the scores with a bn_mode option"),
        ({"synflow_iterations": 0}, ValueError, ">= 1"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        SaliencyPruning(**kwargs)


def test_epoch_trigger_past_max_epochs_fails_at_start() -> None:
    stages = [{"trigger": "epoch", "value": 5, "fraction_of_target": 1.0}]
    with pytest.raises(ValueError, match="max_epochs"):
        make_trainer(None, max_epochs=3, callbacks=[SaliencyPruning(stages=stages)]).fit(make_module(), digits())
