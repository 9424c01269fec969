"""``ChannelPruning``, ``HeadPruning`` and ``NetworkSlimming`` in tiny Lightning runs on the digits data."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from callbacks.channel_pruning import ChannelPruning, HeadPruning
from callbacks.network_slimming import NetworkSlimming
from lit_prune.cli import run_cli
from lit_prune.module import ImageClassifier
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.parameters import parameter_count
from tests.pruning_helpers import digits, make_trainer


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tests run many tiny convolutions, for which one intra-op thread is far faster here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _module(network: str | nn.Module, lr_scheduler: Any = None) -> ImageClassifier:
    optimizer = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    return ImageClassifier(network, num_classes=10, optimizer=optimizer, lr_scheduler=lr_scheduler)


def _trainer(root: Path | None, max_epochs: int, callbacks: list[Any], **kwargs: Any) -> L.Trainer:
    return make_trainer(root, max_epochs, callbacks, limit_train_batches=1, limit_val_batches=1, **kwargs)


def _group_sizes(network: nn.Module) -> dict[str, int]:
    return {name: group.size for name, group in prunable_groups(network).items()}


def _assert_history_matches_network(module: ImageClassifier) -> None:
    sizes = _group_sizes(module.network)
    assert module.surgery_history, "no surgery was recorded"
    for record in module.surgery_history:
        assert sizes[record["group"]] == len(record["keep"]) < record["size"], record["group"]


@pytest.mark.parametrize(
    ("network", "batch", "options"),
    [
        ("resnet20", 8, {"score": "taylor", "calibration_batches": 2}),
        ("resnet32", 4, {"max_group_fraction": 0.5}),
        ("resnet56", 4, {"score": "bn_scale", "normalize": False}),
        ("resnet18", 2, {"include_residual": False, "max_group_fraction": 0.6}),
        ("vgg16_bn", 2, {"score": "l2", "scope": "layer"}),
    ],
)
def test_channel_pruning_removes_the_requested_parameter_fraction(network: str, batch: int, options: dict) -> None:
    L.seed_everything(0)
    module = _module(network)
    dense = parameter_count(module.network)
    callback = ChannelPruning(removed_fraction=0.3, prune_epoch=1, **options)
    _trainer(None, max_epochs=2, callbacks=[callback]).fit(module, digits(batch))

    removed = 1.0 - parameter_count(module.network) / dense
    assert 0.3 <= removed < 0.32
    _assert_history_matches_network(module)
    if options.get("include_residual") is False:
        assert all(".conv1" in record["group"] for record in module.surgery_history)
    if options.get("scope") == "layer":
        fractions = [1 - len(r["keep"]) / r["size"] for r in module.surgery_history]
        assert len(fractions) == 13, "scope 'layer' prunes every group"
        assert max(fractions) - min(fractions) < 1 / 64, "scope 'layer' removes the same fraction everywhere"
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    stages = {stage["name"]: stage for stage in module.pruning_stages}
    assert list(stages) == ["baseline", "pruned", "fine_tuned"]
    assert stages["baseline"]["params"] == dense
    assert stages["pruned"]["params"] == stages["fine_tuned"]["params"] == parameter_count(module.network)
    assert stages["pruned"]["epoch"] == 1 and stages["fine_tuned"]["epoch"] == 2
    validated = _trainer(None, max_epochs=1, callbacks=[]).validate(module, digits(batch), verbose=False)
    assert stages["fine_tuned"]["val_top1"] == pytest.approx(validated[0]["val/top1"], abs=1e-6)


def test_head_pruning_removes_heads_and_mlp_units_and_reloads(tmp_path: Path) -> None:
    L.seed_everything(0)
    module = _module("vit_tiny")
    dense = parameter_count(module.network)
    callback = HeadPruning(removed_fraction=0.3, fine_tune_epochs=1)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[callback], logger=False)
    trainer.fit(module, digits(2))

    assert 0.3 <= 1.0 - parameter_count(module.network) / dense < 0.31
    _assert_history_matches_network(module)
    blocks = module.network.blocks
    heads_removed = 1 - sum(block.attn.num_heads for block in blocks) / (3 * len(blocks))
    units_removed = 1 - sum(block.mlp.fc1.out_features for block in blocks) / (768 * len(blocks))
    assert heads_removed > 0 and units_removed > 0
    assert abs(heads_removed - units_removed) < 1 / 36, "per_kind: both kinds lose the same share of their parameters"
    for block in module.network.blocks:
        assert block.attn.qkv.out_features == 3 * block.attn.num_heads * block.attn.head_dim
        assert block.mlp.fc1.out_features == block.mlp.fc2.in_features

    path = tmp_path / "vit.ckpt"
    trainer.save_checkpoint(path)
    restored = ImageClassifier.load_from_checkpoint(path)
    images = torch.randn(2, 3, 32, 32)
    module.eval()
    assert torch.equal(restored.eval()(images), module(images))


def test_head_pruning_layer_scope_removes_one_head_per_block() -> None:
    L.seed_everything(0)
    module = _module("vit_tiny")
    callback = HeadPruning(removed_fraction=0.05, kinds=["heads"], scope="layer", prune_epoch=0)
    _trainer(None, max_epochs=1, callbacks=[callback]).fit(module, digits(2))
    assert [block.attn.num_heads for block in module.network.blocks] == [2] * 12
    assert all(block.mlp.fc1.out_features == 768 for block in module.network.blocks)


def test_shrunken_checkpoint_reloads_strictly_tests_from_the_cli_and_resumes(
    in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    L.seed_everything(0)
    module = _module("resnet20", lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    checkpoints = ModelCheckpoint(dirpath=in_tmp_dir / "ckpt", save_top_k=-1, filename="{epoch}")
    callback = ChannelPruning(removed_fraction=0.4, prune_epoch=1)
    trainer = _trainer(in_tmp_dir, max_epochs=2, callbacks=[callback, checkpoints])
    trainer.fit(module, digits(8))
    path = in_tmp_dir / "ckpt" / "epoch=1.ckpt"
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2, "the LR schedule must continue after surgery"

    restored = ImageClassifier.load_from_checkpoint(path)
    assert restored.surgery_history == module.surgery_history
    images = torch.randn(4, 3, 32, 32)
    module.eval()
    assert torch.equal(restored.eval()(images), module(images))

    cli = run_cli(
        [
            "test",
            "--model.network=resnet20",
            "--data=datamodules.DigitsDataModule",
            "--data.batch_size=8",
            "--ckpt_path",
            str(path),
            "--trainer.limit_test_batches=2",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert "test/top1" in capsys.readouterr().out
    assert _group_sizes(cli.model.network) == _group_sizes(module.network)

    resumed_module = _module("resnet20", lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    resumed_callback = ChannelPruning(removed_fraction=0.4, prune_epoch=1)
    _trainer(in_tmp_dir, max_epochs=3, callbacks=[resumed_callback]).fit(resumed_module, digits(8), ckpt_path=path)
    assert resumed_module.surgery_history == module.surgery_history, "a resumed run must not prune again"
    assert [stage["name"] for stage in resumed_module.pruning_stages] == ["baseline", "pruned", "fine_tuned"]


def test_restart_lr_schedule_starts_the_schedule_again() -> None:
    L.seed_everything(0)
    module = _module("resnet20", lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    learning_rates: list[float] = []

    class _Spy(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
            learning_rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    callback = ChannelPruning(removed_fraction=0.2, prune_epoch=2, restart_lr_schedule=True)
    _trainer(None, max_epochs=3, callbacks=[callback, _Spy()]).fit(module, digits(8))
    assert learning_rates == pytest.approx([0.05, 0.025, 0.05])


def test_network_slimming_adds_exactly_the_l1_subgradient() -> None:
    L.seed_everything(0)
    module = _module("resnet20")
    penalty = 1e-2
    seen: dict[str, list[dict[str, torch.Tensor]]] = {"before": [], "after": []}

    class _Grads(L.Callback):
        def __init__(self, key: str) -> None:
            self.key = key

        def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: ImageClassifier, optimizer: Any) -> None:
            seen[self.key].append(
                {
                    name: (norm.weight.detach().clone(), norm.weight.grad.clone())
                    for name, norm in pl_module.network.named_modules()
                    if isinstance(norm, nn.BatchNorm2d)
                }
            )

    slimming = NetworkSlimming(penalty=penalty)
    _trainer(None, max_epochs=1, callbacks=[_Grads("before"), slimming, _Grads("after")]).fit(module, digits(8))
    (before,), (after,) = seen["before"], seen["after"]
    assert len(before) == sum(isinstance(m, nn.BatchNorm2d) for m in module.network.modules()) == 21
    for name, (scale, grad) in before.items():
        assert torch.equal(after[name][1], grad + penalty * torch.sign(scale)), name
    assert slimming.active(module)


def test_network_slimming_stops_after_surgery() -> None:
    module = _module("resnet20")
    slimming = NetworkSlimming()
    assert slimming.active(module)
    module.apply_surgery({"layer1.0.conv1": list(range(8))})
    assert not slimming.active(module)
    assert NetworkSlimming(stop_after_surgery=False).active(module)


@pytest.mark.parametrize(
    ("factory", "error", "message"),
    [
        (lambda: ChannelPruning(removed_fraction=1.0, prune_epoch=1), ValueError, r"\(0, 1\)"),
        (lambda: ChannelPruning(removed_fraction=0.0, prune_epoch=1), ValueError, r"\(0, 1\)"),
        (lambda: ChannelPruning(removed_fraction=0.3), ValueError, "exactly one of prune_epoch"),
        (lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=1, fine_tune_epochs=2), ValueError, "exactly one"),
        (lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=1, score="l3"), ValueError, "taylor"),
        (lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=1, scope="local"), ValueError, "global"),
        (lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=1, max_group_fraction=1.5), ValueError, r"\(0, 1\]"),
        (lambda: ChannelPruning(removed_fraction=0.3, fine_tune_epochs=0), ValueError, ">= 1"),
        (lambda: HeadPruning(removed_fraction=0.3, prune_epoch=1, kinds=["channels"]), ValueError, "mlp_units"),
        (lambda: HeadPruning(removed_fraction=0.3, prune_epoch=1, score="bn_scale"), ValueError, "batch norms"),
        (lambda: NetworkSlimming(penalty=-1e-4), ValueError, ">= 0"),
    ],
)
def test_bad_options_fail_at_construction(factory: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        factory()


@pytest.mark.parametrize(
    ("network", "callback", "error", "message"),
    [
        ("vit_tiny", lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=0), ValueError, "use HeadPruning"),
        ("resnet20", lambda: HeadPruning(removed_fraction=0.3, prune_epoch=0), ValueError, "use ChannelPruning"),
        ("mlp", lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=0), TypeError, "supported networks"),
        ("vit_tiny", lambda: NetworkSlimming(), ValueError, "no affine batch norm"),
        ("resnet20", lambda: ChannelPruning(removed_fraction=0.3, prune_epoch=5), ValueError, "max_epochs"),
        ("resnet20", lambda: ChannelPruning(removed_fraction=0.3, fine_tune_epochs=5), ValueError, "max_epochs"),
        (
            "resnet20",
            lambda: ChannelPruning(removed_fraction=0.9, prune_epoch=0, max_group_fraction=0.5),
            ValueError,
            "at most",
        ),
    ],
)
def test_unsupported_models_and_schedules_fail_when_fit_starts(
    network: str, callback: Any, error: type[Exception], message: str
) -> None:
    net: str | nn.Module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)) if network == "mlp" else network
    with pytest.raises(error, match=message):
        _trainer(None, max_epochs=2, callbacks=[callback()]).fit(_module(net), digits(2))


def test_lr_schedule_continues_after_surgery_with_an_optimizer_over_the_new_parameters() -> None:
    L.seed_everything(0)
    module = _module("resnet20", lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5))
    learning_rates: list[float] = []
    optimizer_params: list[set[int]] = []

    class _Spy(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
            learning_rates.append(trainer.optimizers[0].param_groups[0]["lr"])
            optimizer_params.append({id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]})

    callback = ChannelPruning(removed_fraction=0.2, prune_epoch=2)
    _trainer(None, max_epochs=3, callbacks=[callback, _Spy()]).fit(module, digits(8))
    assert learning_rates == pytest.approx([0.05, 0.025, 0.0125])
    assert optimizer_params[-1] == {id(p) for p in module.parameters()}
