"""Robust accuracy: top-1 on clean images and under attacks, counted so that ranks can add them up.

An example counts as robust against an attack only if it is classified correctly both clean and
on every adversarial version of it (all PGD restarts): the convention of AutoAttack (Croce & Hein
2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks"), under which robust accuracy never exceeds clean accuracy. Clean accuracy is measured on
the same pixel images the attacks start from, so an attack of budget 0 gives exactly the clean
accuracy.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.robustness.attacks import (
    AttackSettings,
    PixelSpaceNetwork,
    build_attack,
    check_attack_names,
    preserved_modes,
    seeded,
    to_pixels,
)

__all__ = ["RobustCounts", "count_robust", "robust_accuracy", "robustness_section"]


@dataclass
class RobustCounts:
    """Correct predictions per condition over a number of examples.

    Attributes:
        total: Examples evaluated.
        clean: Examples classified correctly without attack.
        attacked: Attack name to examples classified correctly clean and under that attack.
    """

    total: int = 0
    clean: int = 0
    attacked: dict[str, int] = field(default_factory=dict)

    def add(self, other: RobustCounts) -> None:
        """Adds another batch's (or rank's) counts to these."""
        self.total += other.total
        self.clean += other.clean
        for name, correct in other.attacked.items():
            self.attacked[name] = self.attacked.get(name, 0) + correct

    def as_tensor(self, attacks: Iterable[str]) -> Tensor:
        """``[total, clean, attacked...]`` in the order of ``attacks``, for a sum over ranks."""
        return torch.tensor([self.total, self.clean, *(self.attacked.get(name, 0) for name in attacks)])

    @classmethod
    def from_tensor(cls, values: Tensor, attacks: Iterable[str]) -> RobustCounts:
        """The inverse of :meth:`as_tensor`."""
        numbers = [int(round(float(value))) for value in values]
        return cls(numbers[0], numbers[1], dict(zip(attacks, numbers[2:])))

    def accuracy(self, name: str | None = None) -> float | None:
        """Clean top-1 (``name`` None) or top-1 under attack ``name``; None without examples."""
        if self.total == 0:
            return None
        return (self.clean if name is None else self.attacked[name]) / self.total


def count_robust(
    network: nn.Module,
    images: Tensor,
    labels: Tensor,
    mean: Tensor,
    std: Tensor,
    attacks: Iterable[str],
    settings: AttackSettings,
    seed: int = 0,
) -> RobustCounts:
    """Counts clean and robust correct predictions on one batch of normalised images.

    The network is attacked in eval mode (its own modes are restored afterwards) through
    :class:`~lit_prune.robustness.attacks.PixelSpaceNetwork`; ``pgd`` runs ``settings.restarts``
    times, each from its own random start. Gradients go to the images only: no parameter's
    ``.grad`` is touched.

    Args:
        network: The classifier (normalised images in, logits out).
        images: A batch as the model sees it, normalised.
        labels: Its class indices.
        mean: Per-channel mean, shaped to broadcast over ``images`` (``1 x C x 1 x 1``).
        std: Per-channel standard deviation, shaped the same way.
        attacks: Names from :data:`~lit_prune.robustness.attacks.ATTACKS`.
        settings: The budget.
        seed: Seed of the random starts of this batch.

    Returns:
        The counts of this batch.
    """
    attacks = check_attack_names(list(attacks))
    with torch.inference_mode(False), torch.enable_grad(), preserved_modes(network):
        network.eval()
        model = PixelSpaceNetwork(network, mean.flatten().tolist(), std.flatten().tolist()).to(images.device)
        pixels = to_pixels(images.detach().clone(), model.mean, model.std)
        labels = labels.detach().clone()
        with torch.no_grad():
            clean = model(pixels).argmax(dim=1) == labels
        counts = RobustCounts(total=int(labels.numel()), clean=int(clean.sum()))
        for index, name in enumerate(attacks):
            attack = build_attack(name, model, settings)
            survived = clean.clone()
            for restart in range(settings.restarts if name == "pgd" else 1):
                with seeded(images.device, hash((seed, index, restart)) % (2**63)):
                    adversarial = attack(pixels, labels)
                with torch.no_grad():
                    survived &= model(adversarial).argmax(dim=1) == labels
            counts.attacked[name] = int(survived.sum())
    return counts


def robust_accuracy(
    network: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    mean: Tensor,
    std: Tensor,
    attacks: Iterable[str],
    settings: AttackSettings,
    seed: int = 0,
    indices: Iterable[int] | None = None,
) -> RobustCounts:
    """:func:`count_robust` summed over batches; batch ``i`` draws its random starts from ``(seed, i)``.

    Args:
        network: The classifier.
        batches: Normalised ``(images, labels)`` batches.
        mean: Per-channel mean, ``1 x C x 1 x 1``.
        std: Per-channel standard deviation, the same shape.
        attacks: Names from :data:`~lit_prune.robustness.attacks.ATTACKS`.
        settings: The budget.
        seed: Seed of the random starts.
        indices: The position of each batch in the whole split (a rank's share under DDP), so its
            random starts are those of a single-process evaluation; ``0, 1, 2, ...`` when None.
    """
    attacks = tuple(attacks)
    counts = RobustCounts(attacked=dict.fromkeys(attacks, 0))
    positions = itertools.count() if indices is None else indices
    for index, (images, labels) in zip(positions, batches):
        counts.add(count_robust(network, images, labels, mean, std, attacks, settings, seed=hash((seed, index))))
    return counts


def robustness_section(counts: RobustCounts, settings: AttackSettings, attacks: Iterable[str]) -> dict[str, Any]:
    """The report's ``robustness`` section: accuracies, the budget and a note for what was not measured.

    Returns:
        ``{clean_top1, fgsm_top1, pgd_top1, epsilon, step_size, steps, restarts, samples, notes}``;
        an attack that did not run is None with a note.
    """
    attacks = tuple(attacks)
    notes: dict[str, str] = {}
    section: dict[str, Any] = {"clean_top1": counts.accuracy()}
    for name in ("fgsm", "pgd"):
        if name in attacks:
            section[f"{name}_top1"] = counts.accuracy(name)
        else:
            section[f"{name}_top1"] = None
            notes[f"{name}_top1"] = f"not measured: {name} is not among the attacks {list(attacks)}"
    for name in attacks:
        if name not in ("fgsm", "pgd"):
            section[f"{name}_top1"] = counts.accuracy(name)
    if counts.total == 0:
        notes.update({key: "not measured: no test examples were evaluated" for key in section if key.endswith("_top1")})
    section.update(
        epsilon=settings.epsilon,
        step_size=settings.step_size,
        steps=settings.steps,
        restarts=settings.restarts,
        samples=counts.total,
        attacks=list(attacks),
        notes=notes,
    )
    return section
