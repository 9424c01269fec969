"""Regression channel pruning (He et al. 2017): LASSO selection, least squares, surgery, callback.

Run as a script (``python tests/test_regression_pruning.py OUT_DIR``) it is the two-rank DDP run
of :func:`test_two_rank_ddp_prunes_identically`: Lightning's DDP launcher starts the second rank by
running the same command again.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks.regression_pruning import REGRESSION_REPORT_FILE, ChannelRegressionPruning  # noqa: E402
from datamodules import DigitsDataModule  # noqa: E402
from lit_prune.models import CifarResNet, CifarVGG, create_model  # noqa: E402
from lit_prune.module import ImageClassifier  # noqa: E402
from lit_prune.pruning.channel_surgery import shrink_groups_  # noqa: E402
from lit_prune.pruning.regression_pruning import (  # noqa: E402
    CalibrationData,
    channel_ratios_from_sensitivity,
    collect_calibration_data,
    kept_channel_count,
    lasso_channel_selection,
    least_squares_reconstruction,
    reconstruction_error,
    regression_channel_prune_,
    regression_layers,
    resolve_channel_ratios,
)
from lit_prune.pruning.sensitivity import SensitivityResult  # noqa: E402

SMALL_VGG_CONFIG = (8, "M", 16, "M", 16, "M", 512, "M")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _layer_data(conv: nn.Conv2d, images: torch.Tensor) -> CalibrationData:
    """Every output position of ``conv`` on ``images`` as calibration pairs (reference = the conv itself)."""
    with torch.no_grad():
        patches = nn.functional.unfold(images, conv.kernel_size, padding=conv.padding)
        outputs = conv(images).flatten(2)
    return CalibrationData(
        patches.transpose(1, 2).reshape(-1, patches.shape[1]), outputs.transpose(1, 2).reshape(-1, outputs.shape[1])
    )


def _digit_batches(count: int, batch_size: int) -> list[torch.Tensor]:
    data = DigitsDataModule(batch_size=batch_size, seed=0)
    data.setup("fit")
    batches = []
    for index, batch in enumerate(data.train_dataloader()):
        if index == count:
            break
        batches.append(data.transform_batch(batch, train=False)[0])
    return batches


def _small_vgg_with_statistics(batches: list[torch.Tensor]) -> CifarVGG:
    """A small VGG whose batch norms have running statistics of the digits."""
    torch.manual_seed(0)
    model = CifarVGG(SMALL_VGG_CONFIG, num_classes=10)
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return model.eval()


def _resnet8_module() -> ImageClassifier:
    """A CIFAR ResNet with one basic block per stage (ResNet-8): the ResNet code path at a third of the cost."""
    return ImageClassifier(CifarResNet(1, num_classes=10), optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9))


def _trainer(root: Path | None, max_epochs: int, callbacks: list, **kwargs) -> L.Trainer:
    options = {
        "max_epochs": max_epochs,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    if root is None:
        options.update(logger=False, enable_checkpointing=False)
    else:
        options["default_root_dir"] = str(root)
    return L.Trainer(callbacks=callbacks, **options)


# ---------------------------------------------------------------- LASSO selection


@pytest.mark.parametrize("ignored", [0, 2, 3])
def test_lasso_drops_exactly_the_channel_the_output_does_not_depend_on(ignored: int) -> None:
    torch.manual_seed(ignored)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, ignored] = 0.0
    data = _layer_data(conv, torch.randn(20, 4, 6, 6))
    selection = lasso_channel_selection(data, conv.weight.detach(), conv.bias.detach(), num_keep=3)
    assert selection.keep == [channel for channel in range(4) if channel != ignored]
    assert selection.exact
    assert selection.coefficients[ignored] == 0.0
    assert all(selection.coefficients[channel] > 0.0 for channel in selection.keep)


def test_lasso_picks_the_strongest_channels_and_hits_every_count() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(5, 1, 1, 1) * torch.tensor([8.0, 0.1, 4.0, 0.2, 2.0, 1.0]).view(1, 6, 1, 1))
    data = _layer_data(conv, torch.randn(50, 6, 4, 4))
    for count, expected in [(1, [0]), (2, [0, 2]), (3, [0, 2, 4]), (4, [0, 2, 4, 5])]:
        selection = lasso_channel_selection(data, conv.weight.detach(), conv.bias.detach(), num_keep=count)
        assert selection.keep == expected, count
        assert selection.exact and selection.fits <= 40


def test_selection_falls_back_to_the_largest_coefficients_on_a_plateau() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 3, 3, padding=1)
    with torch.no_grad():
        conv.weight[:, [1, 3]] = 0.0
    data = _layer_data(conv, torch.randn(10, 4, 5, 5))
    # Only two channels ever get a coefficient: no penalty gives three non-zeros.
    selection = lasso_channel_selection(data, conv.weight.detach(), conv.bias.detach(), num_keep=3, max_fits=12)
    assert not selection.exact
    assert selection.keep == [0, 1, 2]
    assert selection.fits <= 12
    assert lasso_channel_selection(data, conv.weight.detach(), None, num_keep=4).keep == [0, 1, 2, 3]


# ---------------------------------------------------------------- least squares


def test_least_squares_is_no_worse_than_naive_removal_or_the_lasso_fit() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1)
    images = torch.randn(30, 4, 6, 6)
    images[:, 3] = images[:, 0] - 0.5 * images[:, 1]  # channel 3 is redundant: removable without loss
    data = _layer_data(conv, images)
    weight, bias = conv.weight.detach(), conv.bias.detach()
    selection = lasso_channel_selection(data, weight, bias, num_keep=3)
    new_weight, new_bias = least_squares_reconstruction(data, weight, bias, selection.keep)
    assert new_weight.shape == (8, 3, 3, 3) and new_bias.shape == (8,)
    beta = torch.tensor(selection.coefficients)[selection.keep].view(1, -1, 1, 1)
    naive = reconstruction_error(data, weight[:, selection.keep], bias, selection.keep)
    lasso = reconstruction_error(data, weight[:, selection.keep] * beta, bias, selection.keep)
    rebuilt = reconstruction_error(data, new_weight, new_bias, selection.keep)
    assert reconstruction_error(data, weight, bias) < 1e-10
    assert rebuilt <= naive and rebuilt <= lasso
    assert 2 in selection.keep, "the LASSO must drop one of the linearly dependent channels 0, 1, 3"
    assert rebuilt < 1e-8 < naive, "a linearly dependent channel is compensated exactly"


def test_least_squares_without_bias_and_with_fewer_samples_than_unknowns() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(5, 4, 3, padding=1, bias=False)
    data = _layer_data(conv, torch.randn(1, 5, 3, 3))  # 9 samples, 27 unknowns: minimum-norm solution
    new_weight, new_bias = least_squares_reconstruction(data, conv.weight.detach(), None, [0, 2, 4])
    assert new_bias is None
    assert reconstruction_error(data, new_weight, None, [0, 2, 4]) < 1e-8


# ---------------------------------------------------------------- calibration and whole networks


def test_calibration_pairs_line_up_with_the_convolution() -> None:
    batches = _digit_batches(2, 6)
    model = _small_vgg_with_statistics(batches)
    data = collect_calibration_data(model, copy.deepcopy(model), "features.4", batches, positions_per_image=5)
    conv = model.features[4]
    assert data.inputs.shape == (2 * 6 * 5, 8 * 9) and data.targets.shape == (2 * 6 * 5, 16)
    assert reconstruction_error(data, conv.weight.detach(), conv.bias.detach()) < 1e-10
    every = collect_calibration_data(model, model, "features.12", batches[:1], positions_per_image=100)
    assert every.samples == 6 * 4 * 4, "a 4x4 feature map offers 16 positions per image"
    assert model.training is False


def test_pruned_network_reports_bounded_feature_map_errors_and_replays() -> None:
    batches = _digit_batches(4, 16)
    reference = _small_vgg_with_statistics(batches)
    network = copy.deepcopy(reference)
    seen = []
    result = regression_channel_prune_(
        network, reference, batches[:3], {"*": 0.5, "features.4": 0.25}, positions_per_image=8, on_layer=seen.append
    )
    assert [layer.layer for layer in result.layers] == ["features.4", "features.8", "features.12"]
    assert seen == result.layers
    assert [(layer.channels, layer.kept) for layer in result.layers] == [(8, 6), (16, 8), (16, 8)]
    assert result.keep == {layer.group: layer.keep for layer in result.layers}
    assert result.layers[0].error_before < 1e-10, "the first pruned layer sees the original inputs"
    for layer in result.layers:
        assert layer.samples == 3 * 16 * 8
        assert 0.0 <= layer.error_reconstructed <= min(layer.error_naive, layer.error_lasso) + 1e-9
        assert layer.error_reconstructed < 0.05, layer
    assert result.layers[-1].error_naive > 5 * result.layers[-1].error_reconstructed
    assert network.features[12].weight.shape == (512, 8, 3, 3)
    assert result.params_after < result.params_before
    assert result.removed_parameter_fraction == pytest.approx(1 - result.params_after / result.params_before)

    # The last pruned layer keeps all its outputs: its error on held-out images stays near the reported one.
    held_out = batches[3]
    with torch.no_grad():
        pruned_maps = network.features[:13](held_out)
        original_maps = reference.features[:13](held_out)
    held_out_error = float((pruned_maps - original_maps).square().sum() / original_maps.square().sum())
    assert held_out_error < 3 * result.layers[-1].error_reconstructed + 0.02

    # keep + the pruned state dict rebuild the network on a fresh copy (what the callback does on every rank).
    replica = copy.deepcopy(reference)
    shrink_groups_(replica, result.keep)
    replica.load_state_dict(network.state_dict())
    with torch.no_grad():
        assert torch.equal(replica(held_out), network(held_out))


def test_resnet_prunes_only_block_internal_channels() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20").eval()
    layers = regression_layers(model)
    assert list(layers)[:2] == ["layer1.0.conv2", "layer1.1.conv2"] and len(layers) == 9
    assert layers["layer3.2.conv2"].group == "layer3.2.conv1"
    network = copy.deepcopy(model)
    result = regression_channel_prune_(
        network, model, [torch.randn(4, 3, 32, 32)], {"layer3.*": 0.5}, positions_per_image=4
    )
    assert list(result.keep) == ["layer3.0.conv1", "layer3.1.conv1", "layer3.2.conv1"]
    assert network.layer3[1].conv1.out_channels == 32 and network.layer3[1].conv2.out_channels == 64
    assert network.layer2[0].conv2.in_channels == 32


# ---------------------------------------------------------------- ratios


def test_ratio_patterns_apply_in_order_and_unmatched_layers_stay() -> None:
    model = create_model("vgg16_bn")
    ratios = resolve_channel_ratios(model, {"features.*": 0.5, "features.4*": 0.7})
    assert list(ratios) == [f"features.{i}" for i in (3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)]
    assert ratios["features.40"] == 0.7 and ratios["features.3"] == 0.5
    only = resolve_channel_ratios(model, {"features.27": 0.25})
    assert only["features.27"] == 0.25 and sum(only.values()) == 0.25
    assert set(resolve_channel_ratios(model, 0.3).values()) == {0.3}
    assert "features.0" not in regression_layers(model), "the first convolution's input is the image"
    assert kept_channel_count(512, 0.7) == 154 and kept_channel_count(3, 0.9) == 1


def test_ratios_from_a_sensitivity_sweep_favour_insensitive_layers() -> None:
    model = CifarVGG(SMALL_VGG_CONFIG)
    names = ["features.0.weight", "features.4.weight", "features.8.weight", "features.12.weight"]
    counts = {name: dict(model.named_parameters())[name].numel() for name in names}
    flat = [[0.0, 0.9], [0.5, 0.9], [0.9, 0.899]]
    steep = [[0.0, 0.9], [0.5, 0.5], [0.9, 0.1]]
    result = SensitivityResult(
        curves={names[0]: steep, names[1]: steep, names[2]: flat, names[3]: steep},
        baseline=0.9,
        param_counts=counts,
    )
    ratios = channel_ratios_from_sensitivity(model, SensitivityResult.from_dict(result.to_dict()), 0.1)
    assert list(ratios) == ["features.4", "features.8", "features.12"]
    assert ratios["features.8"] == pytest.approx(0.9, abs=1e-3) and ratios["features.4"] == 0.0
    assert 0.0 < ratios["features.12"] < 0.1
    partial_result = SensitivityResult(curves={names[0]: flat}, baseline=0.9, param_counts={names[0]: counts[names[0]]})
    with pytest.raises(ValueError, match=r"no curve for features.4.weight.*features.8.weight"):
        channel_ratios_from_sensitivity(model, partial_result, 0.1)


@pytest.mark.parametrize(
    ("ratios", "error", "message"),
    [
        (1.0, ValueError, r"\[0, 1\)"),
        (-0.1, ValueError, r"\[0, 1\)"),
        (True, TypeError, "fraction of input channels"),
        ({"features.99": 0.5}, ValueError, "matches no prunable layer.*features.3, features.7"),
        ({"features.3": 1.5}, ValueError, r"\[0, 1\)"),
    ],
)
def test_bad_ratios_are_clear_errors(ratios: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_channel_ratios(create_model("vgg16_bn"), ratios)


def test_unsupported_models_and_misuse_are_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"does not support VisionTransformer.*CifarVGG.*ResNet"):
        regression_layers(VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3))
    with pytest.raises(TypeError, match="does not support Sequential"):
        regression_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)))
    model = CifarVGG(SMALL_VGG_CONFIG)
    with pytest.raises(ValueError, match="separate, unpruned copy"):
        regression_channel_prune_(model, model, [torch.randn(2, 3, 32, 32)], 0.5)
    with pytest.raises(ValueError, match="non-empty list"):
        regression_channel_prune_(model, copy.deepcopy(model), [], 0.5)
    data = _layer_data(nn.Conv2d(2, 3, 1), torch.randn(2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"num_keep must be an integer in \[1, 2\]"):
        lasso_channel_selection(data, torch.zeros(3, 2, 1, 1), None, num_keep=0)
    with pytest.raises(ValueError, match="does not fit a weight"):
        lasso_channel_selection(data, torch.zeros(3, 4, 1, 1), None, num_keep=1)


# ---------------------------------------------------------------- callback


def test_vgg16_bn_end_to_end_shrinks_fine_tunes_and_reloads(tmp_path: Path) -> None:
    L.seed_everything(0)
    baseline = create_model("vgg16_bn", num_classes=10)
    weights = tmp_path / "baseline.pt"
    torch.save(baseline.state_dict(), weights)
    module = ImageClassifier(
        "vgg16_bn",
        num_classes=10,
        network_kwargs={"checkpoint_path": str(weights)},
        optimizer=partial(torch.optim.SGD, lr=0.01, momentum=0.9),
    )
    callback = ChannelRegressionPruning(
        channel_fraction={"features.*": 0.5, "features.3": 0.0},
        calibration_batches=1,
        positions_per_image=3,
        eval_batches=1,
    )
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[callback])
    trainer.fit(module, DigitsDataModule(batch_size=4, seed=0))

    network = module.network
    data = DigitsDataModule(batch_size=4, seed=0)
    data.setup("fit")
    images, labels = data.transform_batch(next(iter(data.val_dataloader())), train=False)
    with torch.no_grad():
        baseline_loss = float(nn.functional.cross_entropy(baseline.eval()(images), labels))
    assert module.pruning_stages[0]["val_loss"] == pytest.approx(baseline_loss, rel=1e-5), "start from checkpoint_path"
    assert network.features[0].out_channels == network.features[3].in_channels == 64, "features.3 not pruned"
    assert network.features[3].out_channels == network.features[7].in_channels == 32
    assert network.features[40].in_channels == 256 and network.classifier[0].in_features == 512
    assert module.surgery_history[0]["group"] == "features.3"
    assert [stage["name"] for stage in module.pruning_stages] == ["baseline", "pruned", "fine_tuned"]
    before, pruned, tuned = module.pruning_stages
    assert pruned["params"] == sum(p.numel() for p in network.parameters()) < 0.5 * before["params"]
    assert pruned["macs"] < 0.5 * before["macs"] and pruned["peak_memory_mb"] < before["peak_memory_mb"]
    assert pruned["params_removed_fraction"] == pytest.approx(1 - pruned["params"] / before["params"])
    assert tuned["epoch"] == 1 and set(pruned["regression_layers"]) == {
        f"features.{i}" for i in (7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)
    }
    optimizer_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in module.parameters()}, "the optimizer must train the new parameters"
    report = json.loads((Path(trainer.log_dir) / REGRESSION_REPORT_FILE).read_text())
    assert report["layers"][0]["layer"] == "features.7"
    assert all(layer["error_reconstructed"] <= layer["error_naive"] + 1e-9 for layer in report["layers"])
    assert "regression channel pruning" in callback.describe_method()

    path = tmp_path / "pruned.ckpt"
    trainer.save_checkpoint(path)
    restored = ImageClassifier.load_from_checkpoint(path).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(restored(images), module.eval()(images))
    assert restored.surgery_history == module.surgery_history


def test_resnet_with_sensitivity_file_and_linear_mask_resumes_without_pruning_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    L.seed_everything(0)
    module = _resnet8_module()
    layers = regression_layers(module.network)
    params = dict(module.network.named_parameters())
    curves = {f"{name}.weight": [[0.0, 0.9], [0.5, 0.85], [0.9, 0.5]] for name in layers}
    sensitivity = SensitivityResult(curves, 0.9, {name: params[name].numel() for name in curves})
    sensitivity_file = tmp_path / "sensitivity.json"
    sensitivity_file.write_text(json.dumps(sensitivity.to_dict()))

    def make_callback() -> ChannelRegressionPruning:
        return ChannelRegressionPruning(
            sensitivity_file=str(sensitivity_file),
            sensitivity_target=0.5,
            calibration_batches=1,
            positions_per_image=2,
            start_epoch=1,
            linear_sparsity=0.5,
            profile_stages=False,
        )

    callback = make_callback()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[callback])
    trainer.fit(module, DigitsDataModule(batch_size=8, seed=0))
    assert callback.layer_ratios == channel_ratios_from_sensitivity(CifarResNet(1), sensitivity, 0.5)
    expected = {
        layer.group: kept_channel_count(params[f"{name}.weight"].shape[1], callback.layer_ratios[name])
        for name, layer in layers.items()
    }
    assert {record["group"]: len(record["keep"]) for record in module.surgery_history} == {
        group: kept for group, kept in expected.items() if kept < params[f"{group}.weight"].shape[0]
    }
    assert [stage["name"] for stage in module.pruning_stages] == ["baseline", "pruned", "fine_tuned"]
    assert module.pruning_stages[0]["epoch"] == 1, "pruned at the start of epoch 1, after training epoch 0"
    assert set(module.pruning_mask) == {"fc.weight"} and module.pruning_mask.sparsity() == pytest.approx(0.5)
    assert module.network.fc.weight[~module.pruning_mask["fc.weight"]].abs().sum() == 0

    resumed = _resnet8_module()
    checkpoint = trainer.checkpoint_callback.best_model_path
    assert Path(checkpoint).is_file()

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the resumed run pruned again")

    monkeypatch.setattr("callbacks.regression_pruning.regression_channel_prune_", must_not_run)
    _trainer(tmp_path, max_epochs=3, callbacks=[make_callback()]).fit(
        resumed, DigitsDataModule(batch_size=8, seed=0), ckpt_path=checkpoint
    )
    assert resumed.surgery_history == module.surgery_history, "a resumed run must not prune again"
    assert [stage["name"] for stage in resumed.pruning_stages] == ["baseline", "pruned", "fine_tuned"]
    assert resumed.pruning_mask.equals(module.pruning_mask)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"channel_fraction": 1.0}, ValueError, r"\[0, 1\)"),
        ({"channel_fraction": {"features.3": "half"}}, TypeError, "fraction"),
        ({}, ValueError, "exactly one of channel_fraction"),
        ({"channel_fraction": 0.5, "sensitivity_file": "s.json", "sensitivity_target": 0.5}, ValueError, "exactly one"),
        ({"sensitivity_file": "missing.json", "sensitivity_target": 0.5}, FileNotFoundError, "does not exist"),
        ({"sensitivity_file": "missing.json"}, ValueError, "sensitivity_target"),
        (
            {"channel_fraction": 0.5, "calibration_batches": 0},
            ValueError,
            "calibration_batches must be an integer >= 1",
        ),
        ({"channel_fraction": 0.5, "positions_per_image": 0}, ValueError, "positions_per_image"),
        ({"channel_fraction": 0.5, "linear_sparsity": 1.0}, ValueError, "linear_sparsity"),
        ({"channel_fraction": 0.5, "max_lasso_fits": 1}, ValueError, "max_lasso_fits"),
    ],
)
def test_bad_callback_options_fail_at_construction(kwargs: dict, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ChannelRegressionPruning(**kwargs)


def test_unsupported_model_and_late_start_fail_at_setup() -> None:
    vit = ImageClassifier(VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3))
    with pytest.raises(TypeError, match="does not support VisionTransformer"):
        _trainer(None, 1, [ChannelRegressionPruning(channel_fraction=0.5)]).fit(vit, DigitsDataModule(batch_size=8))
    with pytest.raises(ValueError, match="start_epoch puts epoch .* at or after trainer.max_epochs"):
        _trainer(None, 2, [ChannelRegressionPruning(channel_fraction=0.5, start_epoch=2)]).fit(
            ImageClassifier("resnet20"), DigitsDataModule(batch_size=8)
        )
    with pytest.raises(ValueError, match="matches no prunable layer"):
        _trainer(None, 1, [ChannelRegressionPruning(channel_fraction={"features.*": 0.5})]).fit(
            ImageClassifier("resnet20"), DigitsDataModule(batch_size=8)
        )


def test_a_failure_of_the_regression_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise ValueError("calibration went wrong")

    monkeypatch.setattr("callbacks.regression_pruning.regression_channel_prune_", fail)
    module = _resnet8_module()
    callback = ChannelRegressionPruning(channel_fraction=0.5, calibration_batches=1, profile_stages=False)
    with pytest.raises(ValueError, match="calibration went wrong"):
        _trainer(None, 1, [callback]).fit(module, DigitsDataModule(batch_size=8))
    assert not callback.done and module.surgery_history == []


# ---------------------------------------------------------------- DDP


def test_two_rank_ddp_prunes_identically(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, __file__, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert rank0["surgery"] == rank1["surgery"] and len(rank0["surgery"]) == 3
    assert rank0["weights"].keys() == rank1["weights"].keys()
    for name in rank0["weights"]:
        assert torch.equal(rank0["weights"][name], rank1["weights"][name]), name
    assert rank0["stages"] == rank1["stages"]
    assert [stage["name"] for stage in rank0["stages"]] == ["baseline", "pruned", "fine_tuned"]
    assert (tmp_path / REGRESSION_REPORT_FILE).is_file(), "rank 0 writes the report into the run directory"


class _SaveRankState(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
        state = {
            "surgery": pl_module.surgery_history,
            "weights": {k: v.detach().cpu() for k, v in pl_module.network.state_dict().items()},
            "stages": pl_module.pruning_stages,
        }
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")


def _ddp_main(out_dir: Path) -> None:
    L.seed_everything(0)
    module = _resnet8_module()
    callbacks = [
        ChannelRegressionPruning(channel_fraction=0.5, calibration_batches=2, positions_per_image=4),
        _SaveRankState(out_dir),
    ]
    trainer = _trainer(None, 1, callbacks, devices=2, strategy="ddp", default_root_dir=str(out_dir))
    trainer.fit(module, DigitsDataModule(batch_size=8, seed=0))


if __name__ == "__main__":
    _ddp_main(Path(sys.argv[1]))
