"""Shared fixtures: every test runs on CPU in its own working directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # ``pytest -n N`` runs N workers side by side: one thread each (and in the commands they
    # start), since torch's default of one thread per core would make them slow each other down.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True
    return any(definition.scope == "module" for defs in info.name2fixturedefs.values() for definition in defs)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup``, keeps the tests of a module-scoped fixture on one worker.

    The fixture (a quickstart run, a shared sweep, a trained checkpoint) is then built once; every
    other test may run on any worker.
    """
    for item in items:
        if _uses_a_module_fixture(item):
            module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
            item.add_marker(pytest.mark.xdist_group(module))


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs the test inside ``tmp_path`` so ``lightning_logs/`` and ``data/`` land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


class _StopAfterEpoch(Callback):
    """Stops training cleanly at the end of epoch ``epoch``, as an interrupted run would."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


@pytest.fixture
def interrupted_fit(tmp_path: Path) -> Callable[..., Path]:
    """Fits a module with its callbacks until the end of an epoch and returns ``last.ckpt``.

    The returned function takes ``(module, callbacks, max_epochs, stop_after_epoch, datamodule)``
    and the trainer keyword arguments of ``tests.pruning_helpers.make_trainer``; the run stops
    after ``stop_after_epoch`` with ``last.ckpt`` saved, ready for ``fit(ckpt_path=...)``.
    """
    from tests.pruning_helpers import make_trainer

    def run(
        module: LightningModule,
        callbacks: list[Callback],
        max_epochs: int,
        stop_after_epoch: int,
        datamodule: LightningDataModule,
        **trainer_kwargs: Any,
    ) -> Path:
        directory = tmp_path / "interrupted"
        checkpoint = ModelCheckpoint(dirpath=directory, save_last=True)
        stop = _StopAfterEpoch(stop_after_epoch)
        callbacks = [*callbacks, checkpoint, stop]
        make_trainer(directory, max_epochs=max_epochs, callbacks=callbacks, **trainer_kwargs).fit(module, datamodule)
        return directory / "last.ckpt"

    return run
