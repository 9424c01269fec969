"""``MagnitudePruning`` in real (tiny) Lightning runs: exact sparsity, zeros that stay zero, stages."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import MagnitudePruning
from callbacks.magnitude_pruning import _build_plan
from lit_prune.module import ImageClassifier
from lit_prune.pruning import prunable_parameters
from tests.pruning_helpers import digits, make_module, make_trainer


def _pruned_weights_are_zero(module: ImageClassifier) -> bool:
    params = dict(module.network.named_parameters())
    return all(bool((params[name][~keep] == 0).all()) for name, keep in module.pruning_mask.items())


@pytest.mark.parametrize(
    "optimizer",
    [
        partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
        partial(torch.optim.Adam, lr=1e-3),
        partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05),
    ],
    ids=["sgd", "adam", "adamw"],
)
def test_one_shot_global_exact_sparsity_and_zeros_stay_zero(optimizer: partial) -> None:
    L.seed_everything(0)
    module = make_module(optimizer=optimizer)
    callback = MagnitudePruning(target_sparsity=0.7, start_epoch=1, exclude=["conv1.weight", "fc.weight"])
    make_trainer(None, max_epochs=3, callbacks=[callback]).fit(module, digits())

    mask = module.pruning_mask
    selected = prunable_parameters(module.network, exclude=["conv1.weight", "fc.weight"])
    total = sum(p.numel() for p in selected.values())
    assert set(mask) == set(selected)
    assert mask.num_pruned() == round(0.7 * total)
    assert _pruned_weights_are_zero(module), "a pruned weight moved during retraining"
    assert [s["name"] for s in module.pruning_stages] == ["baseline", "pruned", "fine_tuned"]
    assert module.pruning_stages[1]["sparsity"] == pytest.approx(mask.sparsity())
    validated = make_trainer(None, max_epochs=1, callbacks=[]).validate(module, digits(), verbose=False)
    assert module.pruning_stages[2]["val_top1"] == pytest.approx(validated[0]["val/top1"], abs=1e-6)


def test_bf16_mixed_precision_keeps_zeros() -> None:
    L.seed_everything(0)
    module = make_module()
    callback = MagnitudePruning(target_sparsity=0.5, start_epoch=0, scope="layer")
    make_trainer(None, max_epochs=2, callbacks=[callback], precision="bf16-mixed").fit(module, digits())
    for name, fraction in module.pruning_mask.layer_sparsity().items():
        numel = module.pruning_mask[name].numel()
        assert abs(fraction * numel - round(0.5 * numel)) < 1e-6, name
    assert _pruned_weights_are_zero(module)


def test_iterative_schedule_only_shrinks_masks() -> None:
    L.seed_everything(0)
    module = make_module()
    masks = []

    class _Spy(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
            if pl_module.pruning_mask is not None:
                masks.append(pl_module.pruning_mask.state_dict())

    callback = MagnitudePruning(target_sparsity=0.8, schedule="iterative", fraction_of_remaining=0.5, every_n_epochs=1)
    make_trainer(None, max_epochs=4, callbacks=[callback, _Spy()]).fit(module, digits())
    assert [round(s["target_sparsity"], 6) for s in module.pruning_stages if "target_sparsity" in s] == [0.5, 0.75, 0.8]
    for earlier, later in zip(masks, masks[1:]):
        for name in earlier:
            assert not (later[name] & ~earlier[name]).any(), f"{name} revived a pruned weight"
    assert module.pruning_mask.sparsity() == pytest.approx(0.8, abs=1e-5)


def test_plans() -> None:
    assert _build_plan("one_shot", 0.9, 5, None, 1, None, 0.2) == [(5, 0.9, 1.0)]
    iterative = _build_plan("iterative", 0.9, 0, None, 2, None, 0.5)
    assert [e for e, _, _ in iterative] == [0, 2, 4, 6]
    assert iterative[-1][1] == 0.9
    additive = _build_plan("iterative", 0.5, 1, None, 3, None, 0.2, 0.1)
    assert [(e, round(v, 6)) for e, v, _ in additive] == [(1, 0.1), (4, 0.2), (7, 0.3), (10, 0.4), (13, 0.5)]
    listed = _build_plan("iterative", 0.75, 0, None, 1, [3, 7], 0.2)
    assert [(e, round(s, 6)) for e, s, _ in listed] == [(3, 0.5), (7, 0.75)]
    gradual = _build_plan("gradual", 0.9, 2, 6, 1, None, 0.2)
    levels = [s for _, s, _ in gradual]
    assert levels == sorted(levels) and levels[-1] == pytest.approx(0.9) and gradual[-1][0] == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_sparsity": 1.0}, "[0, 1)"),
        ({"target_sparsity": -0.1}, "[0, 1)"),
        ({"target_sparsity": 0.5, "schedule": "cubic"}, "one_shot"),
        ({"target_sparsity": 0.5, "schedule": "gradual"}, "end_epoch"),
        ({"target_sparsity": 0.5, "scope": "local"}, "global"),
        ({"target_sparsity": 0.5, "epochs": [1, 2]}, "iterative"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        MagnitudePruning(**kwargs)


def test_pattern_matching_no_parameter_fails_at_start() -> None:
    callback = MagnitudePruning(target_sparsity=0.5, exclude=["classifier.weight"])
    with pytest.raises(ValueError, match="classifier.weight"):
        make_trainer(None, max_epochs=1, callbacks=[callback]).fit(make_module(), digits())


def test_pruning_epoch_past_max_epochs_fails_at_start() -> None:
    callback = MagnitudePruning(target_sparsity=0.5, start_epoch=5)
    with pytest.raises(ValueError, match="max_epochs"):
        make_trainer(None, max_epochs=3, callbacks=[callback]).fit(make_module(), digits())


def test_pruned_checkpoint_tests_and_reloads_strictly(tmp_path: Path) -> None:
    L.seed_everything(0)
    module = make_module()
    callback = MagnitudePruning(target_sparsity=0.9, start_epoch=1)
    trainer = make_trainer(tmp_path, max_epochs=2, callbacks=[callback])
    trainer.fit(module, digits())
    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(path)

    restored = ImageClassifier.load_from_checkpoint(path)
    assert restored.pruning_mask == module.pruning_mask
    assert [s["name"] for s in restored.pruning_stages] == [s["name"] for s in module.pruning_stages]
    assert _pruned_weights_are_zero(restored)
    results = make_trainer(None, max_epochs=1, callbacks=[]).test(ImageClassifier("resnet20"), digits(), ckpt_path=path)
    saved = make_trainer(None, max_epochs=1, callbacks=[]).test(module, digits(), verbose=False)
    assert results[0]["test/top1"] == pytest.approx(saved[0]["test/top1"], abs=1e-6)


def test_checkpoint_does_not_need_the_weights_the_run_started_from(tmp_path: Path) -> None:
    start = tmp_path / "start.pt"
    torch.save(make_module().network.state_dict(), start)
    module = ImageClassifier("resnet20", network_kwargs={"checkpoint_path": str(start)})
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[MagnitudePruning(target_sparsity=0.5)])
    trainer.fit(module, digits())
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    start.unlink()
    restored = ImageClassifier.load_from_checkpoint(tmp_path / "run.ckpt")
    assert restored.pruning_mask == module.pruning_mask
