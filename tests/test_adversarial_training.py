"""Adversarial training of ``ImageClassifier`` (``adversarial_training:``) and robust convergence per round.

It must make a network more robust than natural training does (on the digits, at a small ε), keep
pruned weights exactly zero with every optimizer and in bf16-mixed, leave nothing in a parameter's
``.grad`` from the attack's own backward passes, and report robust validation accuracy each epoch.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback, LightningDataModule
from torch import nn

from callbacks.robustness import RobustnessEvaluation
from datamodules import DigitsDataModule
from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import PruningMask
from lit_prune.robustness import AdversarialTraining, AttackSettings, robust_accuracy
from tests.conftest import CONFIG_DIR
from tests.test_cli import lit_prune

EPSILON = 0.1


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )


def _digits() -> DigitsDataModule:
    return DigitsDataModule(batch_size=64, image_size=8, seed=0)


def _trainer(max_epochs: int, callbacks: list[Callback] = (), **kwargs: Any) -> L.Trainer:
    options = {
        "max_epochs": max_epochs,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 1,
        **kwargs,
    }
    return L.Trainer(callbacks=list(callbacks), **options)


def _pgd_accuracy(module: ImageClassifier, datamodule: DigitsDataModule) -> tuple[float, float]:
    """Clean and PGD-10 top-1 on the whole digits test split at ε = EPSILON."""
    datamodule.setup("test")
    batches = [datamodule.transform_batch(batch, train=False) for batch in datamodule.test_dataloader()]
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (datamodule.mean, datamodule.std))
    settings = AttackSettings.checked(EPSILON, EPSILON / 4, steps=10)
    counts = robust_accuracy(module.network, batches, mean, std, ["pgd"], settings)
    return counts.accuracy(), counts.accuracy("pgd")


def _fit(adversarial_training: dict[str, Any] | None) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    optimizer = functools.partial(torch.optim.Adam, lr=3e-3)
    module = ImageClassifier(_mlp(), num_classes=10, optimizer=optimizer, adversarial_training=adversarial_training)
    datamodule = _digits()
    _trainer(6).fit(module, datamodule)
    return _pgd_accuracy(module, datamodule)


@pytest.mark.parametrize(
    "adversarial_training",
    [
        {"method": "pgd", "epsilon": EPSILON, "step_size": EPSILON / 2, "steps": 3},
        {"method": "fgsm_rs", "epsilon": EPSILON},
    ],
    ids=["pgd", "fgsm_rs"],
)
def test_adversarial_training_is_more_robust_than_natural_training(adversarial_training: dict[str, Any]) -> None:
    natural_clean, natural_pgd = _fit(None)
    clean, pgd = _fit(adversarial_training)
    assert natural_clean > 0.9 and clean > 0.85
    assert natural_pgd < 0.5
    assert pgd > natural_pgd + 0.15, (natural_pgd, pgd)


class _GradientsBeforeBackward(Callback):
    """Records whether any parameter had a gradient when the training step's backward began."""

    def __init__(self) -> None:
        self.leaked: list[bool] = []

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self.leaked.append(any(p.grad is not None and p.grad.abs().sum() > 0 for p in pl_module.parameters()))


class _RobustValidation(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.values.append(float(trainer.callback_metrics["val/pgd_top1"]))


@pytest.mark.parametrize(
    ("optimizer", "precision"),
    [
        (functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4), "32-true"),
        (functools.partial(torch.optim.Adam, lr=3e-3), "32-true"),
        (functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4), "bf16-mixed"),
        (functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.05), "bf16-mixed"),
    ],
    ids=["sgd", "adam", "sgd-bf16", "adamw-bf16"],
)
def test_masks_stay_exact_and_the_attack_leaves_no_gradients(optimizer: Any, precision: str) -> None:
    L.seed_everything(0, verbose=False)
    options = {"method": "pgd", "epsilon": "8/255", "steps": 2, "val_batches": 1}
    module = ImageClassifier(_cnn(), num_classes=10, optimizer=optimizer, adversarial_training=options)
    generator = torch.Generator().manual_seed(0)
    keep = {
        name: torch.rand(param.shape, generator=generator) > 0.6
        for name, param in module.network.named_parameters()
        if name in ("0.weight", "4.weight")
    }
    module.set_pruning_mask(PruningMask(keep))
    gradients, robust = _GradientsBeforeBackward(), _RobustValidation()
    _trainer(2, [gradients, robust], limit_train_batches=4, precision=precision).fit(module, _digits())
    parameters = dict(module.network.named_parameters())
    for name, kept in keep.items():
        assert torch.count_nonzero(parameters[name].detach()[~kept]) == 0, name
        assert torch.count_nonzero(parameters[name].detach()[kept]) == int(kept.sum()), name
    assert gradients.leaked == [False] * 8
    assert len(robust.values) == 2 and all(0.0 <= value <= 1.0 for value in robust.values)


def test_natural_epochs_before_start_epoch_then_adversarial() -> None:
    adversary = AdversarialTraining.from_options({"method": "fgsm_rs", "epsilon": "4/255", "start_epoch": 2})
    assert adversary.settings.step_size == pytest.approx(1.25 * 4 / 255)
    assert [adversary.active(epoch) for epoch in range(4)] == [False, False, True, True]
    assert adversary.describe() == "fast FGSM (random start) adversarial training from epoch 2, ε 4/255"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "cw"}, "adversarial_training.method must be one of ['pgd', 'fgsm_rs']"),
        ({"epsilon": 1.5}, "adversarial_training.epsilon must be a number in [0, 1] in pixel units"),
        ({"epsilon": -0.1}, "adversarial_training.epsilon must be a number in [0, 1]"),
        ({"steps": 0}, "adversarial_training.steps must be an integer >= 1"),
        ({"method": "fgsm_rs", "steps": 3}, "steps is 1 for fgsm_rs"),
        ({"epsilons": 0.1}, "adversarial_training has no option ['epsilons']"),
    ],
)
def test_bad_adversarial_training_options_are_clear_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as error:
        ImageClassifier(_mlp(), adversarial_training=options)
    assert message in str(error.value)


class _NoNormalization(LightningDataModule):
    """Digits loaders behind a data module that does not say how it normalises."""

    def __init__(self) -> None:
        super().__init__()
        self.digits = _digits()

    def setup(self, stage: str) -> None:
        self.digits.setup(stage)

    def train_dataloader(self) -> Any:
        return self.digits.train_dataloader()

    def val_dataloader(self) -> Any:
        return self.digits.val_dataloader()


def test_a_data_module_without_normalisation_is_a_clear_error() -> None:
    module = ImageClassifier(_mlp(), adversarial_training={"method": "pgd"})
    with pytest.raises(UserError, match="needs the normalisation of the data: the data module _NoNormalization"):
        _trainer(1).fit(module, _NoNormalization())


def _fake_module(sparsity: float) -> SimpleNamespace:
    mask = SimpleNamespace(sparsity=lambda: sparsity)
    return SimpleNamespace(pruning_mask=mask if sparsity else None, surgery_history=[])


def test_rounds_record_the_first_epoch_at_the_target_and_the_final_value() -> None:
    callback = RobustnessEvaluation(target_accuracy=0.4)
    trajectory = [(0.0, 0.1), (0.0, 0.45), (0.0, 0.3), (0.5, 0.2), (0.5, 0.35), (0.5, 0.41), (0.5, 0.5)]
    for epoch, (sparsity, value) in enumerate(trajectory):
        callback._follow(_fake_module(sparsity), epoch, value, torch.tensor(0.9))
    first, second = callback.rounds
    assert (first["round"], first["start_epoch"], first["epochs"], first["epochs_to_target"]) == (0, 0, 3, 2)
    assert (first["final"], first["best"], first["epoch_reached"]) == (0.3, 0.45, 1)
    assert (second["round"], second["sparsity"], second["start_epoch"], second["epochs"]) == (1, 0.5, 3, 4)
    assert (second["epochs_to_target"], second["epoch_reached"], second["final"]) == (3, 5, 0.5)
    assert second["final_val_top1"] == pytest.approx(0.9)


def test_boosting_ticket_config_reports_robust_rounds_through_the_console_script(tmp_path: Path) -> None:
    config = CONFIG_DIR / "e9_boosting_tickets_resnet20_cifar10.yaml"
    result = lit_prune(
        "fit",
        "--config",
        str(config),
        "--data",
        "{class_path: datamodules.DigitsDataModule, init_args: {batch_size: 8}}",
        "--trainer.max_epochs=2",
        "--trainer.callbacks.epochs_per_round=1",
        '--model.adversarial_training={"method":"pgd","epsilon":"8/255","steps":2,"val_batches":1}',
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = tmp_path / "lightning_logs" / "e9_boosting_tickets_resnet20_cifar10" / "version_0"
    section = json.loads((run / "report.json").read_text())["robustness"]
    assert section["training"] == "PGD-2 adversarial training, ε 8/255"
    assert [entry["sparsity"] for entry in section["rounds"]] == [0.0, 0.5]
    assert all(entry["epochs"] == 1 and isinstance(entry["final"], float) for entry in section["rounds"])
    assert "Robust convergence per round" in (run / "report.md").read_text()


def test_bad_adversarial_training_exits_2_through_the_console_script(tmp_path: Path) -> None:
    result = lit_prune(
        "fit",
        "--config",
        str(CONFIG_DIR / "quickstart.yaml"),
        "--model.adversarial_training={method: pgd, epsilon: 2}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "adversarial_training.epsilon must be a number in [0, 1] in pixel units" in result.stdout + result.stderr
