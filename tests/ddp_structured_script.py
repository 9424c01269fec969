"""Two-process CPU DDP run of ``ChannelPruning``; each rank saves the network it ended with.

Run by ``tests/test_ddp_structured.py`` as ``python tests/ddp_structured_script.py OUT_DIR``: Lightning's
DDP launcher starts the second rank by running this script again. The channels are scored with the
Taylor score, whose gradients come from data, so the decision has to be broadcast from rank 0.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks.channel_pruning import ChannelPruning  # noqa: E402
from datamodules import DigitsDataModule  # noqa: E402
from lit_prune.module import ImageClassifier  # noqa: E402


class _SaveRankState(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
        state = {
            "weights": {k: v.detach().cpu() for k, v in pl_module.network.state_dict().items()},
            "surgery": pl_module.surgery_history,
            "stages": pl_module.pruning_stages,
            "optimizer_params": sum(p.numel() for group in trainer.optimizers[0].param_groups for p in group["params"]),
            "global_step": trainer.global_step,
        }
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")


def main(out_dir: Path) -> None:
    L.seed_everything(0)
    module = ImageClassifier(
        "resnet20", num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    )
    callbacks = [
        ChannelPruning(removed_fraction=0.4, prune_epoch=1, score="taylor", calibration_batches=2),
        _SaveRankState(out_dir),
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(module, DigitsDataModule(batch_size=16))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
