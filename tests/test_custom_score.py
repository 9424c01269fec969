"""A score defined outside lit-prune, named by its import path in YAML, through the installed console script."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import torch

from tests.conftest import REPO_ROOT
from tests.test_cli import lit_prune

USER_MODULE = '''
"""A user's own weight score: |w| squared, recording each call."""

from pathlib import Path

from lit_prune.pruning import register_score


@register_score("squared_magnitude", kind="weights")
def squared_magnitude(params):
    with open(Path(__file__).with_name("calls.txt"), "a") as calls:
        calls.write(f"{len(params)}\\n")
    return {name: param.detach().pow(2) for name, param in params.items()}
'''

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: 1
  accelerator: cpu
  devices: 1
  limit_train_batches: 2
  limit_val_batches: 2
  enable_progress_bar: false
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: lightning_logs, name: custom}}
  callbacks:
    - class_path: callbacks.MagnitudePruning
      init_args: {{target_sparsity: 0.5, score: {score}, exclude: [fc.weight]}}
model:
  network: resnet20
data:
  class_path: datamodules.DigitsDataModule
  init_args: {{batch_size: 16, num_workers: 0, seed: 0}}
"""


def _run(tmp_path: Path, score: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "my_scores.py").write_text(textwrap.dedent(USER_MODULE))
    config = tmp_path / "custom.yaml"
    config.write_text(CONFIG.format(score=score))
    return lit_prune(
        "fit",
        "--config",
        str(config),
        cwd=tmp_path,
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO_ROOT)])},
    )


def test_a_users_score_by_import_path_prunes_through_lit_prune_fit(tmp_path: Path) -> None:
    result = _run(tmp_path, "my_scores.squared_magnitude")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "calls.txt").read_text().split() == ["21"], "the score ran once, on the 21 convolution weights"
    last = tmp_path / "lightning_logs" / "custom" / "version_0" / "checkpoints" / "last.ckpt"
    mask = torch.load(last, map_location="cpu", weights_only=False)["pruning"]["mask"]
    pruned = sum(int((~keep).sum()) for keep in mask.values())
    assert pruned == round(0.5 * sum(keep.numel() for keep in mask.values()))
