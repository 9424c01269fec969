"""Early-bird tickets: BN-scale channel masks, mask distance, the detector, and the ``EarlyBird`` callback."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn

from callbacks import early_bird as early_bird_callback
from callbacks.early_bird import EarlyBird
from callbacks.network_slimming import NetworkSlimming
from lit_prune.models import CifarVGG, create_model
from lit_prune.module import ImageClassifier
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.early_bird import EarlyBirdDetector, bn_scale_channel_mask, keep_indices, mask_distance
from tests.pruning_helpers import digits, make_trainer


def _set_scales(model: nn.Module, values: dict[str, Tensor]) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, scale in values.items():
            modules[name].weight.copy_(scale)


def _prefix_mask(sizes: dict[str, int], flipped: int) -> dict[str, Tensor]:
    """All channels kept except every other one of the first ``2 * flipped`` (nested as ``flipped`` grows)."""
    flat = torch.ones(sum(sizes.values()), dtype=torch.bool)
    flat[torch.arange(flipped) * 2] = False
    return dict(zip(sizes, flat.split(list(sizes.values()))))


# ---------------------------------------------------------------- masks


def test_mask_removes_the_lowest_scales_under_one_global_threshold() -> None:
    torch.manual_seed(0)
    model = CifarVGG((8, "M", 16, "M", 16, "M", 512, "M"), num_classes=10)
    norms = [f"features.{index + 1}" for index, layer in enumerate(model.features) if isinstance(layer, nn.Conv2d)]
    scales = torch.randperm(552).float().add(1).neg().split([8, 16, 16, 512])  # distinct, negative: |gamma| counts
    _set_scales(model, dict(zip(norms, scales)))

    mask = bn_scale_channel_mask(model, channel_fraction=0.25)
    threshold = torch.cat(scales).abs().sort().values[137]  # round(0.25 * 552) = 138 entries go
    for (group, keep), scale in zip(mask.items(), scales):
        assert torch.equal(keep, scale.abs() > threshold), group
    assert sum(int((~keep).sum()) for keep in mask.values()) == 138
    assert list(mask) == list(prunable_groups(model))


def test_residual_channel_stays_while_any_of_its_batch_norms_keeps_it() -> None:
    model = create_model("resnet20")
    groups = prunable_groups(model)
    stream_norms = [s.module for s in groups["layer1"].slices if s.role == "norm" and s.attr == "weight"]
    assert stream_norms == ["bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"]
    torch.manual_seed(0)
    norms = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    scales = {name: torch.rand(norm.num_features) + 1.0 for name, norm in norms.items()}
    for name in stream_norms:
        scales[name][0] = 0.01  # channel 0 is small in every layer writing the stream
    for name in stream_norms[:3]:
        scales[name][1] = 0.02  # channel 1 is small in three of the four
    scales["layer1.0.bn1"][5] = 0.03  # a block-internal channel
    _set_scales(model, scales)
    total = sum(s.numel() for s in scales.values())  # every batch norm belongs to exactly one group

    mask = bn_scale_channel_mask(model, channel_fraction=8 / total)
    removed = {name: torch.nonzero(~keep).reshape(-1).tolist() for name, keep in mask.items() if not keep.all()}
    assert removed == {"layer1": [0], "layer1.0.conv1": [5]}

    internal = bn_scale_channel_mask(model, channel_fraction=8 / total, include_residual=False)
    assert "layer1" not in internal and internal["layer1.0.conv1"].tolist().count(False) == 1


def test_cap_keeps_the_largest_scales_of_a_group() -> None:
    model = CifarVGG((8, "M", 512, "M"), num_classes=10)
    _set_scales(model, {"features.1": torch.arange(8.0) * 1e-3, "features.5": torch.ones(512)})
    mask = bn_scale_channel_mask(model, channel_fraction=0.3, max_group_fraction=0.5)  # 156 of 520 entries fall below
    assert mask["features.0"].tolist() == [False] * 4 + [True] * 4, "the cap keeps the 4 largest of 8"
    assert mask["features.4"].tolist() == [False] * 148 + [True] * 364, "ties go in order of position"
    assert keep_indices(mask)["features.0"] == [4, 5, 6, 7]


def test_mask_distance_is_the_fraction_of_disagreeing_channels() -> None:
    first = {"a": torch.tensor([True, True, False, False]), "b": torch.tensor([True] * 6)}
    second = {"a": torch.tensor([True, False, False, True]), "b": torch.tensor([True] * 5 + [False])}
    assert mask_distance(first, second) == pytest.approx(3 / 10)
    assert mask_distance(first, first) == 0.0
    with pytest.raises(ValueError, match="different groups"):
        mask_distance(first, {"a": first["a"]})
    with pytest.raises(ValueError, match="shapes"):
        mask_distance(first, {"a": first["a"], "b": torch.ones(5, dtype=torch.bool)})


def test_detector_fires_when_the_window_settles_and_not_before() -> None:
    sizes = {"g": 100}
    detector = EarlyBirdDetector(window=3, threshold=0.1)
    results = []
    for flipped in [50, 30, 20, 12, 8, 5]:
        distance = detector.update(_prefix_mask(sizes, flipped))
        results.append((None if distance is None else round(distance, 4), detector.found))
    assert results == [(None, False), (0.2, False), (0.3, False), (0.18, False), (0.12, False), (0.07, True)]

    restored = EarlyBirdDetector(window=3, threshold=0.1)
    restored.load_state_dict(detector.state_dict())
    assert restored.found and restored.max_distance() == pytest.approx(0.07)


def test_detector_needs_a_full_window_and_a_distance_strictly_below_threshold() -> None:
    same = _prefix_mask({"g": 10}, 2)
    detector = EarlyBirdDetector(window=3, threshold=0.1)
    detector.update(same)
    detector.update(same)
    assert not detector.found, "fired before the window was full"
    detector.update(same)
    assert detector.found
    on_threshold = EarlyBirdDetector(window=2, threshold=0.1)
    on_threshold.update(_prefix_mask({"g": 10}, 2))
    assert on_threshold.update(_prefix_mask({"g": 10}, 3)) == pytest.approx(0.1)
    assert not on_threshold.found


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_out_of_range_is_rejected(ratio: float) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        bn_scale_channel_mask(create_model("resnet20"), ratio)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        EarlyBird(channel_fraction=ratio)


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda: EarlyBirdDetector(window=1), ValueError, ">= 2"),
        (lambda: EarlyBirdDetector(threshold=0.0), ValueError, r"\(0, 1\]"),
        (lambda: EarlyBird(draw_epoch=0), ValueError, ">= 1"),
        (lambda: EarlyBird(max_group_fraction=0.0), ValueError, r"\(0, 1\]"),
        (lambda: EarlyBird(restart_lr_schedule="yes"), TypeError, "true or false"),
        (lambda: bn_scale_channel_mask(create_model("vit_tiny"), 0.3), ValueError, "no convolution channel groups"),
        (lambda: bn_scale_channel_mask(nn.Sequential(nn.Linear(2, 2)), 0.3), TypeError, "supported networks"),
    ],
)
def test_bad_input_gets_a_clear_error(factory: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        factory()


# ---------------------------------------------------------------- callback


def _module(lr_scheduler: Any = None) -> ImageClassifier:
    optimizer = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    return ImageClassifier("resnet20", num_classes=10, optimizer=optimizer, lr_scheduler=lr_scheduler)


def _trainer(root: Path | None, max_epochs: int, callbacks: list[Any], **kwargs: Any) -> L.Trainer:
    return make_trainer(root, max_epochs, callbacks, limit_train_batches=1, limit_val_batches=1, **kwargs)


def _channel_counts(module: ImageClassifier) -> dict[str, int]:
    return {name: group.size for name, group in prunable_groups(module.network).items()}


def test_callback_draws_the_ticket_when_the_constructed_masks_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    L.seed_everything(0)
    module = _module()
    sizes = _channel_counts(module)
    flipped_at_epoch = {0: 0, 1: 224, 2: 134, 3: 90, 4: 54, 5: 36, 6: 22, 7: 10}
    callback = EarlyBird(channel_fraction=0.3, window=3, threshold=0.1)
    trainer = _trainer(None, max_epochs=8, callbacks=[callback])

    def constructed_mask(*args: Any, **kwargs: Any) -> dict[str, Tensor]:
        return _prefix_mask(sizes, flipped_at_epoch[trainer.current_epoch])

    monkeypatch.setattr(early_bird_callback, "bn_scale_channel_mask", constructed_mask)
    trainer.fit(module, digits(8))

    pruned = next(stage for stage in module.pruning_stages if stage["name"] == "pruned")
    assert pruned["earlybird_epoch"] == 6, "the window [54, 36, 22] is the first within 0.1"
    assert pruned["mask_distance"] == pytest.approx(32 / 448)
    assert [epoch for epoch, _ in pruned["mask_distance_curve"]] == [2, 3, 4, 5, 6]
    ticket = _prefix_mask(sizes, 22)
    assert _channel_counts(module) == {name: int(keep.sum()) for name, keep in ticket.items()}
    assert pruned["channels_removed_fraction"] == pytest.approx(22 / 448)
    assert [stage["name"] for stage in module.pruning_stages] == ["baseline", "pruned", "fine_tuned"]
    assert float(trainer.callback_metrics["earlybird/mask_distance"]) == pytest.approx(32 / 448)


def test_fixed_epoch_draws_the_bn_scale_ticket_restarts_the_lr_and_stops_slimming() -> None:
    L.seed_everything(0)
    module = _module(lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    drawn: dict[str, Any] = {}

    class _Spy(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
            if trainer.current_epoch == 2:
                drawn["lr"] = trainer.optimizers[0].param_groups[0]["lr"]

    class _MaskAtDraw(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
            if trainer.current_epoch == 2:
                drawn["mask"] = bn_scale_channel_mask(pl_module.network, 0.5)

    slimming = NetworkSlimming(penalty=1e-3)
    callback = EarlyBird(channel_fraction=0.5, draw_epoch=2)
    _trainer(None, max_epochs=3, callbacks=[slimming, _MaskAtDraw(), callback, _Spy()]).fit(module, digits(8))

    assert _channel_counts(module) == {name: int(keep.sum()) for name, keep in drawn["mask"].items()}
    pruned = next(stage for stage in module.pruning_stages if stage["name"] == "pruned")
    assert pruned["earlybird_epoch"] == 2 and pruned["earlybird_mode"] == "fixed"
    assert 0.0 < pruned["channels_removed_fraction"] <= 0.5
    assert pruned["params"] < pruned["params_before"]
    assert drawn["lr"] == pytest.approx(0.05), "restart_lr_schedule is the default: the schedule starts again"
    assert not slimming.active(module)


def test_resume_before_and_after_the_draw_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    def run(max_epochs: int, ckpt_path: Path | None, directory: str) -> ImageClassifier:
        L.seed_everything(0)
        module = _module()
        checkpoints = ModelCheckpoint(dirpath=tmp_path / directory, save_top_k=-1, filename="{epoch}")
        early_bird = EarlyBird(channel_fraction=0.3, window=3, threshold=1.0)
        callbacks = [NetworkSlimming(penalty=1e-3), early_bird, checkpoints]
        _trainer(tmp_path, max_epochs, callbacks, logger=False).fit(module, digits(8), ckpt_path=ckpt_path)
        return module

    uninterrupted = run(5, None, "a")
    assert [stage["epoch"] for stage in uninterrupted.pruning_stages] == [3, 3, 5], "window 3 fills at epoch 3"
    before_draw = run(5, tmp_path / "a" / "epoch=1.ckpt", "b")
    after_draw = run(5, tmp_path / "a" / "epoch=3.ckpt", "c")
    for resumed in (before_draw, after_draw):
        assert resumed.surgery_history == uninterrupted.surgery_history
        assert [stage["name"] for stage in resumed.pruning_stages] == ["baseline", "pruned", "fine_tuned"]
        state = uninterrupted.network.state_dict()
        for name, tensor in resumed.network.state_dict().items():
            assert torch.equal(tensor, state[name]), name
