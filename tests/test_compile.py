"""``ImageClassifier(compile=..., channels_last=...)``: compiled and NHWC training with masks and surgery.

Compiling is slow on a CPU (inductor generates and builds C++ for every graph: about a minute for
ResNet-20's training graph on one core), so the inductor test uses a tiny network and the tests of
masks and surgery on ResNet-20 use the ``aot_eager`` backend, which runs the same capture
(TorchDynamo, AOTAutograd: what decides whether masks and shapes are seen) without code generation.
The console-script test compiles ResNet-20 with inductor and costs about two minutes the first time
(inductor's cache in ``/tmp`` makes later runs faster).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_prune.errors import UserError
from lit_prune.module import ImageClassifier
from lit_prune.pruning import global_prune_mask, magnitude_scores, prunable_parameters
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.structured_importance import select_channels, structured_importance
from tests.pruning_helpers import digits, make_module, make_trainer
from tests.test_cli import TINY_LIMITS, lit_prune

AOT_EAGER = {"backend": "aot_eager"}


class TinyNet(nn.Module):
    """Conv, batch norm, pooling and a linear head: the smallest network with every kind of layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.bn(self.conv(images)))
        return self.fc(features.mean(dim=(2, 3)))


def _half_mask(network: nn.Module):
    return global_prune_mask(magnitude_scores(prunable_parameters(network)), 0.5)


def _pruned_positions_are_zero(module: ImageClassifier) -> bool:
    params = dict(module.network.named_parameters())
    return all(bool((params[name][~keep] == 0).all()) for name, keep in module.pruning_mask.items())


def _batch(count: int = 16) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _eager_logits(module: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module.network(images)


def test_compile_and_channels_last_options_are_checked() -> None:
    with pytest.raises(UserError, match="compile must be true, false or a mapping"):
        ImageClassifier(TinyNet(), compile="yes")
    with pytest.raises(UserError, match=r"unknown torch.compile arguments \['bakend'\]; allowed: fullgraph"):
        ImageClassifier(TinyNet(), compile={"bakend": "eager"})
    with pytest.raises(TypeError, match="channels_last"):
        ImageClassifier(TinyNet(), channels_last="yes")


def test_inductor_training_keeps_masked_weights_zero_and_state_dict_plain(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ImageClassifier(TinyNet(), num_classes=10, compile=True)
    module.set_pruning_mask(_half_mask(module.network))
    before = {name: param.detach().clone() for name, param in module.network.named_parameters()}
    make_trainer(tmp_path, max_epochs=1, callbacks=[]).fit(module, digits())

    assert module._compiled_network is not None, "the trainer's steps ran through torch.compile"
    assert _pruned_positions_are_zero(module)
    after = dict(module.network.named_parameters())
    assert any(not torch.equal(before[name], after[name]) for name in before), "training changed the weights"
    assert not [key for key in module.state_dict() if "_orig_mod" in key]
    module.eval()
    with torch.no_grad():
        assert torch.allclose(module(_batch()), module.network(_batch()), atol=1e-5)


def test_compiled_masks_and_surgery_with_checkpoints_both_ways(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = make_module(compile=AOT_EAGER)
    module.set_pruning_mask(_half_mask(module.network))
    make_trainer(tmp_path / "dense", max_epochs=1, callbacks=[]).fit(module, digits())
    first_wrapper = module._compiled_network
    assert first_wrapper is not None and _pruned_positions_are_zero(module)

    groups = prunable_groups(module.network, include_residual=True, kinds=["channels"])
    keep = select_channels(structured_importance(module.network, groups, "l1"), 0.5, scope="layer")
    module.apply_surgery(keep)
    assert module._compiled_network is None, "surgery drops the compiled wrapper, so the network compiles again"
    params_after_surgery = sum(param.numel() for param in module.network.parameters())
    trainer = make_trainer(tmp_path / "shrunk", max_epochs=1, callbacks=[])
    trainer.fit(module, digits())
    assert module._compiled_network is not None and module._compiled_network is not first_wrapper
    assert _pruned_positions_are_zero(module)
    images = _batch()
    with torch.no_grad():
        compiled_logits = module.eval()(images)
    assert torch.allclose(compiled_logits, _eager_logits(module, images), atol=1e-5)
    assert not [key for key in module.state_dict() if "_orig_mod" in key]

    checkpoint = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(checkpoint)
    plain = ImageClassifier.load_from_checkpoint(checkpoint, compile=False)
    assert plain.compile_options is None
    assert sum(param.numel() for param in plain.network.parameters()) == params_after_surgery
    assert torch.equal(_eager_logits(plain, images), _eager_logits(module, images))
    assert plain.pruning_mask is not None and _pruned_positions_are_zero(plain)

    uncompiled_checkpoint = tmp_path / "plain.ckpt"
    make_trainer(tmp_path / "plain", max_epochs=1, callbacks=[], limit_train_batches=1).fit(plain.train(), digits())
    plain.trainer.save_checkpoint(uncompiled_checkpoint)
    recompiled = ImageClassifier.load_from_checkpoint(uncompiled_checkpoint, compile=AOT_EAGER)
    with torch.no_grad():
        assert torch.allclose(recompiled.eval()(images), _eager_logits(plain, images), atol=1e-5)


def test_channels_last_trains_and_evaluates_through_surgery(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = make_module(channels_last=True)
    seen_layouts: list[bool] = []
    module.network.conv1.register_forward_pre_hook(
        lambda _, inputs: seen_layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    trainer = make_trainer(tmp_path, max_epochs=1, callbacks=[])
    trainer.fit(module, digits())
    trainer.validate(module, digits(), verbose=False)
    assert seen_layouts and all(seen_layouts), "every training and validation batch reaches the network as NHWC"

    groups = prunable_groups(module.network, include_residual=True, kinds=["channels"])
    module.apply_surgery(select_channels(structured_importance(module.network, groups, "l1"), 0.5, scope="layer"))
    convolutions = [m for m in module.network.modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convolutions)
    images = _batch()
    module.eval()
    with torch.no_grad():
        nhwc = module(images)
        nchw = module.network.to(memory_format=torch.contiguous_format)(images)
    assert torch.allclose(nhwc, nchw, atol=1e-4)


def test_console_fit_with_compile_and_channels_last_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "compiled.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            seed_everything: 0
            trainer:
              max_epochs: 1
              accelerator: cpu
              devices: 1
              logger:
                class_path: lightning.pytorch.loggers.TensorBoardLogger
                init_args: {save_dir: lightning_logs, name: compiled}
              callbacks:
                - class_path: callbacks.profiling.ProfilingCallback
                  init_args: {batch_size: 16, latency_repeats: 2, energy_repeats: 1, max_eval_batches: 1}
            model:
              network: resnet20
            data:
              class_path: datamodules.DigitsDataModule
              init_args: {batch_size: 16, seed: 0}
            """
        )
    )
    result = lit_prune(
        "fit", "--config", str(config), "--model.compile=true", "--model.channels_last=true", *TINY_LIMITS, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_dir = tmp_path / "lightning_logs" / "compiled" / "version_0"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["profile"]["latency_ms"] > 0
    assert "layer1.0.conv1.weight" in report["sparsity"]["layers"]
    assert "_orig_mod" not in (run_dir / "report.json").read_text() + (run_dir / "report.md").read_text()
    saved = (run_dir / "config.yaml").read_text()
    assert "compile: true" in saved and "channels_last: true" in saved
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and not [key for key in state if "_orig_mod" in key]
