"""Shared fixtures: every test runs on CPU in its own working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs the test inside ``tmp_path`` so ``lightning_logs/`` and ``data/`` land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
