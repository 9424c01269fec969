"""Two-process CPU DDP run of the pruning callbacks; each rank saves what it ended with.

Run by ``tests/test_ddp.py`` as ``python tests/ddp_pruning_script.py OUT_DIR CONTROL``: Lightning's DDP
launcher starts the second rank by running this script again.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbacks import LotteryTicket  # noqa: E402
from datamodules import DigitsDataModule  # noqa: E402
from lit_prune.module import ImageClassifier  # noqa: E402


class _SaveRankState(L.Callback):
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: L.Trainer, pl_module: ImageClassifier) -> None:
        state = {
            "mask": pl_module.pruning_mask.state_dict(),
            "weights": {k: v.detach().cpu() for k, v in pl_module.network.state_dict().items()},
            "stages": pl_module.pruning_stages,
        }
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")


def main(out_dir: Path, control: str) -> None:
    L.seed_everything(0)
    module = ImageClassifier(
        "resnet20", num_classes=10, optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)
    )
    callbacks = [
        LotteryTicket(epochs_per_round=1, rounds=2, fraction_of_remaining=0.5, control=control),
        _SaveRankState(out_dir),
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
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
    main(Path(sys.argv[1]), sys.argv[2])
