"""Warm-up schedules: their closed-form values and an exact continuation after a state-dict reload."""

from __future__ import annotations

import math

import pytest
import torch

from lit_prune.lr_schedulers import WarmupCosineLR, WarmupMultiStepLR


def _lrs(scheduler: torch.optim.lr_scheduler.LRScheduler, epochs: int) -> list[float]:
    values = []
    for _ in range(epochs):
        values.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


def test_warmup_then_multistep() -> None:
    scheduler = WarmupMultiStepLR(_optimizer(), milestones=[4, 6], gamma=0.1, warmup_epochs=2, warmup_start_factor=0.1)
    assert _lrs(scheduler, 8) == pytest.approx([0.01, 0.055, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_warmup_then_cosine_to_the_floor() -> None:
    scheduler = WarmupCosineLR(_optimizer(), max_epochs=6, warmup_epochs=1, warmup_start_factor=0.5, min_lr_factor=0.1)
    expected = [0.05] + [0.1 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (e - 1) / 5))) for e in range(1, 6)] + [0.01]
    assert _lrs(scheduler, 7) == pytest.approx(expected)


def test_reloaded_scheduler_continues_exactly() -> None:
    first = WarmupCosineLR(_optimizer(), max_epochs=10, warmup_epochs=2)
    _lrs(first, 4)
    second = WarmupCosineLR(_optimizer(), max_epochs=10, warmup_epochs=2)
    second.load_state_dict(first.state_dict())
    second.optimizer.param_groups[0]["lr"] = first.get_last_lr()[0]
    assert _lrs(second, 6) == pytest.approx(_lrs(first, 6))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda o: WarmupMultiStepLR(o, milestones=[5, 3]), "strictly increasing"),
        (lambda o: WarmupMultiStepLR(o, milestones=[3], gamma=0.0), "gamma"),
        (lambda o: WarmupCosineLR(o, max_epochs=5, warmup_epochs=5), "less than max_epochs"),
        (lambda o: WarmupCosineLR(o, max_epochs=5, min_lr_factor=1.5), "min_lr_factor"),
        (lambda o: WarmupCosineLR(o, max_epochs=5, warmup_start_factor=0.0), "warmup_start_factor"),
    ],
)
def test_bad_arguments(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(_optimizer())
