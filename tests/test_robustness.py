"""Robust accuracy (lit_prune.robustness) and the RobustnessEvaluation callback, run as a user runs them.

The attacks are checked against what can be computed by hand: a budget of 0 changes nothing, and
for a two-class linear classifier the L∞ worst case moves each pixel by ε against the sign of
``w_y - w_j``, so FGSM and PGD accuracies have a closed form.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lit_prune.errors import UserError
from lit_prune.report.schema import ROBUSTNESS_KEYS, check_report
from lit_prune.robustness import (
    AdversarialTraining,
    AttackSettings,
    check_attack_names,
    check_pixel_amount,
    count_robust,
    normalization_of,
    robust_accuracy,
)
from lit_prune.tensorboard_scalars import read_scalars
from tests.test_cli import LIT_PRUNE, lit_prune

MEAN = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)
STD = torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)


def _small_cnn(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, classes)
    )
    with torch.no_grad():
        network[1].running_mean.uniform_(-0.2, 0.2)
    return network.eval()


def _batch(network: nn.Module, count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised images and labels of which about half agree with the network's predictions."""
    generator = torch.Generator().manual_seed(1)
    pixels = torch.rand(count, 3, 4, 4, generator=generator)
    images = (pixels - MEAN) / STD
    with torch.no_grad():
        predicted = network(images).argmax(dim=1)
    labels = torch.where(torch.arange(count) % 2 == 0, predicted, torch.randint(0, 10, (count,), generator=generator))
    return images, labels


def test_a_budget_of_zero_gives_exactly_the_clean_accuracy() -> None:
    network = _small_cnn()
    images, labels = _batch(network)
    settings = AttackSettings.checked(0, "2/255", steps=5, restarts=3)
    counts = count_robust(network, images, labels, MEAN, STD, ["fgsm", "pgd", "fgsm_rs"], settings)
    assert 0 < counts.clean < counts.total
    assert counts.attacked == {"fgsm": counts.clean, "pgd": counts.clean, "fgsm_rs": counts.clean}


def test_robust_accuracy_never_exceeds_clean_and_more_restarts_never_raise_it() -> None:
    network = _small_cnn()
    images, labels = _batch(network)
    one = count_robust(network, images, labels, MEAN, STD, ["fgsm", "pgd"], AttackSettings.checked("8/255", "2/255"))
    three = count_robust(
        network, images, labels, MEAN, STD, ["pgd"], AttackSettings.checked("8/255", "2/255", restarts=3)
    )
    assert one.attacked["fgsm"] <= one.clean and one.attacked["pgd"] < one.clean
    assert three.attacked["pgd"] <= one.attacked["pgd"]
    assert three.clean == one.clean


def _linear_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """A two-class linear classifier on 3x2x2 images with pixels in [0.3, 0.7], and its weights in pixel space."""
    generator = torch.Generator().manual_seed(3)
    network = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with torch.no_grad():
        network[1].weight.copy_(torch.randn(2, 12, generator=generator))
        network[1].bias.copy_(torch.randn(2, generator=generator))
    pixels = 0.3 + 0.4 * torch.rand(400, 3, 2, 2, generator=generator)
    labels = torch.randint(0, 2, (400,), generator=generator)
    # In pixel space the logits are (W / std) x + (b - W mean / std): weights per pixel divided by its channel's std.
    scale = (1.0 / STD).expand(1, 3, 2, 2).flatten()
    weights = network[1].weight.detach() * scale
    return network, (pixels - MEAN) / STD, pixels, labels, weights


@pytest.mark.parametrize("epsilon", [0.01, 0.05])
def test_fgsm_and_pgd_on_a_linear_classifier_match_the_closed_form(epsilon: float) -> None:
    network, images, pixels, labels, weights = _linear_problem()
    with torch.no_grad():
        logits = network(images)
    margin = logits.gather(1, labels[:, None]).squeeze(1) - logits.gather(1, 1 - labels[:, None]).squeeze(1)
    difference = weights[labels] - weights[1 - labels]
    worst = margin - epsilon * difference.abs().sum(dim=1)
    keep = (margin.abs() > 1e-3) & (worst.abs() > 1e-3)
    images, labels, margin, worst = images[keep], labels[keep], margin[keep], worst[keep]
    expected_clean, expected_robust = int((margin > 0).sum()), int(((margin > 0) & (worst > 0)).sum())
    assert 0 < expected_robust < expected_clean < len(labels)

    # PGD from a random start with steps of 2 epsilon lands on the worst corner after its first step.
    settings = AttackSettings.checked(epsilon, 2 * epsilon, steps=3, restarts=2)
    counts = count_robust(network, images, labels, MEAN, STD, ["fgsm", "pgd"], settings)
    assert counts.clean == expected_clean
    assert counts.attacked == {"fgsm": expected_robust, "pgd": expected_robust}


def test_adversarial_examples_stay_in_the_pixel_budget_and_range() -> None:
    network = _small_cnn()
    images, labels = _batch(network)
    images[0, 0] = (torch.zeros(4, 4) - MEAN[0, 0]) / STD[0, 0]  # a black channel: the attack must clip at 0
    adversary = AdversarialTraining.from_options({"method": "pgd", "epsilon": "8/255", "steps": 3})
    adversarial = adversary.training_batch(network, images, labels, MEAN, STD, seed=0)
    before, after = images * STD + MEAN, adversarial * STD + MEAN
    assert after.min() >= -1e-6 and after.max() <= 1 + 1e-6
    change = (after - before).abs()
    assert change.max() <= 8 / 255 + 1e-5
    assert change.max() >= 8 / 255 - 1e-5, "PGD uses its budget"
    assert all(parameter.grad is None for parameter in network.parameters())


def test_evaluation_is_repeatable_and_leaves_the_global_random_state_alone() -> None:
    network = _small_cnn()
    images, labels = _batch(network)
    settings = AttackSettings.checked("8/255", "1/255", steps=2)
    state = torch.random.get_rng_state()
    first = robust_accuracy(network, [(images, labels)], MEAN, STD, ["pgd"], settings, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    assert first == robust_accuracy(network, [(images, labels)], MEAN, STD, ["pgd"], settings, seed=5)
    assert not network.training


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_pixel_amount(-0.1, "epsilon"), "epsilon must be a number in [0, 1] in pixel units"),
        (lambda: check_pixel_amount(1.5, "epsilon"), "got 1.5"),
        (lambda: check_pixel_amount("8/zero", "epsilon"), "e.g. 8/255"),
        (lambda: AttackSettings.checked("8/255", "2/255", steps=0), "steps must be an integer >= 1"),
        (lambda: AttackSettings.checked("8/255", "2/255", restarts=0), "restarts must be an integer >= 1"),
        (lambda: check_attack_names(["pgd", "foo"]), "torchattacks 3.3.0 has no attack 'foo'"),
        (lambda: check_attack_names(["cw"]), "has 'cw', but lit-prune builds only the L∞ attacks"),
        (lambda: normalization_of(object(), "RobustnessEvaluation"), "no per-channel 'mean' and 'std'"),
        (lambda: normalization_of(None, "adversarial_training"), "no data module has no"),
    ],
)
def test_bad_options_are_clear_errors(call, message: str) -> None:
    with pytest.raises(UserError) as error:
        call()
    assert message in str(error.value)


def _config(root: Path) -> Path:
    """A dense ResNet-20 on digits with RobustnessEvaluation (PGD-2 on two test batches)."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "accelerator": "cpu",
            "devices": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "limit_test_batches": 3,
            "enable_progress_bar": False,
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "lightning_logs", "name": "robust"},
            },
            "callbacks": [
                {"class_path": "callbacks.profiling.ProfilingCallback", "init_args": {"latency_repeats": 1}},
                {"class_path": "callbacks.RobustnessEvaluation", "init_args": {"steps": 2, "epsilon": "8/255"}},
            ],
        },
        "model": {"network": "resnet20"},
        "data": {"class_path": "datamodules.DigitsDataModule", "init_args": {"batch_size": 16}},
    }
    path = root / "robust.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _check_section(section: dict, trigger: str, training: str) -> None:
    for key in ROBUSTNESS_KEYS:
        assert isinstance(section[key], float) and 0.0 <= section[key] <= 1.0, key
    assert section["fgsm_top1"] <= section["clean_top1"] and section["pgd_top1"] <= section["clean_top1"]
    assert section["epsilon"] == pytest.approx(8 / 255) and section["step_size"] == pytest.approx(2 / 255)
    assert (section["steps"], section["restarts"], section["samples"]) == (2, 1, 48)
    assert all(isinstance(section[key], int) for key in ("steps", "restarts", "samples"))
    assert section["trigger"] == trigger and section["training"] == training


def test_fit_then_test_of_its_checkpoint_report_robustness(tmp_path: Path) -> None:
    """A DDP fit on two CPU processes (each attacks its share of the 3 test batches), then a test of its checkpoint."""
    assert LIT_PRUNE.is_file()
    config = _config(tmp_path)
    adversarial = "--model.adversarial_training={method: pgd, epsilon: 8/255, steps: 2, val_batches: 1}"
    fitted = lit_prune(
        "fit", "--config", str(config), "--trainer.devices=2", "--trainer.strategy=ddp", adversarial, cwd=tmp_path
    )
    assert fitted.returncode == 0, fitted.stdout + fitted.stderr
    assert "Attack mode" not in fitted.stdout + fitted.stderr
    run = tmp_path / "lightning_logs" / "robust" / "version_0"
    report = json.loads((run / "report.json").read_text())
    _check_section(report["robustness"], "fit", "PGD-2 adversarial training, ε 8/255")
    assert json.loads((run / "robustness.json").read_text()) == report["robustness"]
    assert "## Robustness" in (run / "report.md").read_text()
    assert {"robustness/clean_top1", "robustness/fgsm_top1", "robustness/pgd_top1"} <= set(read_scalars(run))
    assert "RobustnessEvaluation: top-1 clean" in fitted.stdout + fitted.stderr

    unmeasured = {**report, "robustness": {**report["robustness"], "pgd_top1": None}}
    with pytest.raises(ValueError, match="robustness.pgd_top1 is null without a note"):
        check_report(unmeasured)
    with pytest.raises(ValueError, match="robustness.steps must be int"):
        check_report({**report, "robustness": {**report["robustness"], "steps": "10"}})

    tested = lit_prune(
        "test", "--config", str(config), "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    test_report = json.loads((run / "test" / "report.json").read_text())
    _check_section(test_report["robustness"], "test", "PGD-2 adversarial training, ε 8/255")
    for key in ROBUSTNESS_KEYS:  # the same batches and the same random starts as the two ranks had
        assert test_report["robustness"][key] == report["robustness"][key], key

    compared = lit_prune("report", str(run), str(run / "test"), "--output", str(tmp_path / "cmp"), cwd=tmp_path)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    comparison = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## Robustness" in comparison and "| PGD-2 adversarial training, ε 8/255 | 8/255 | 2 × 1 |" in comparison
    assert "PGD top-1 %" in (tmp_path / "cmp" / "statistics.md").read_text()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--trainer.callbacks.epsilon=-0.5", "epsilon must be a number in [0, 1] in pixel units"),
        ("--trainer.callbacks.steps=0", "steps must be an integer >= 1"),
        ("--trainer.callbacks.attacks=[fgsm,deepfool]", "has 'deepfool', but lit-prune builds only"),
    ],
)
def test_bad_options_exit_2_through_the_console_script(option: str, message: str, tmp_path: Path) -> None:
    result = lit_prune("fit", "--config", str(_config(tmp_path)), option, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert len((result.stdout + result.stderr).strip().splitlines()) <= 10
