"""Adversarial training: the examples a training step learns from, made in pixel space.

Two methods, both L∞ in pixel units of the ``[0, 1]`` range:

- ``pgd``: Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks":
  every step trains on PGD examples (``steps`` steps of ``step_size`` from a uniform random start
  in the ε-ball, projected and clipped to ``[0, 1]``); their CIFAR-10 setting is ε = 8/255,
  step 2/255, 7 steps.
- ``fgsm_rs``: Wong et al. 2020, "Fast is better than free: Revisiting adversarial training": one
  FGSM step of ``step_size`` (1.25 ε by default, as in the paper) from a uniform random start in
  the ε-ball, projected and clipped.

The attack runs with the network in eval mode, so batch-norm running statistics are updated only
by the training forward pass on the adversarial batch (TRADES' code does the same), and with
gradients taken for the images only: it never writes a parameter's ``.grad`` and never steps an
optimizer, so the module's mask enforcement around the optimizer step is all a pruned weight
needs. Its random starts come from a random state seeded by the options' ``seed`` and the global
step (and rank), not from the global random state, so a resumed run draws what an uninterrupted
one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lit_prune.errors import UserError, UserTypeError
from lit_prune.robustness.attacks import (
    AttackSettings,
    PixelSpaceNetwork,
    build_attack,
    check_pixel_amount,
    format_pixels,
    preserved_modes,
    seeded,
    to_normalized,
    to_pixels,
)
from lit_prune.validation import check_choice, check_int

__all__ = ["METHODS", "AdversarialTraining"]

METHODS = ("pgd", "fgsm_rs")
"""The adversarial-training methods: Madry et al.'s PGD and Wong et al.'s fast FGSM with random start."""

_OPTIONS = ("method", "epsilon", "step_size", "steps", "start_epoch", "val_steps", "val_batches", "seed")


@dataclass(frozen=True)
class AdversarialTraining:
    """What ``ImageClassifier(adversarial_training=...)`` trains on, and how validation measures robustness.

    Attributes:
        method: ``pgd`` or ``fgsm_rs``.
        settings: The training attack's budget (ε, step size, steps).
        start_epoch: Train on adversarial examples from this epoch on (natural training before):
            0 trains adversarially throughout; a lottery ticket found by natural training is
            trained adversarially by starting at its first round.
        val_settings: The budget of the PGD that validation reports as ``val/pgd_top1``.
        val_batches: Validation batches attacked each epoch (the first ones), so epochs stay cheap.
        seed: Seed of the random starts.
    """

    method: str
    settings: AttackSettings
    start_epoch: int
    val_settings: AttackSettings
    val_batches: int
    seed: int

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> AdversarialTraining | None:
        """The configuration from the module's ``adversarial_training`` option, or None for natural training.

        Options: ``method`` (``pgd`` | ``fgsm_rs``, default ``pgd``), ``epsilon`` (default 8/255),
        ``step_size`` (default 2/255 for PGD, 1.25 ε for ``fgsm_rs``), ``steps`` (PGD, default 7),
        ``start_epoch`` (default 0), ``val_steps`` (PGD steps of the validation attack, default
        10, of step 2.5 ε / ``val_steps`` as Madry et al. choose it), ``val_batches`` (default 2),
        ``seed`` (default 0).

        Raises:
            UserError: If an option is unknown or out of range.
        """
        if options is None:
            return None
        if not isinstance(options, Mapping):
            raise UserTypeError(f"adversarial_training must be a mapping of options {list(_OPTIONS)} or null")
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise UserError(f"adversarial_training has no option {unknown}; its options are {list(_OPTIONS)}")
        method = check_choice(options.get("method", "pgd"), "adversarial_training.method", METHODS)
        epsilon = check_pixel_amount(options.get("epsilon", "8/255"), "adversarial_training.epsilon")
        default_step = 1.25 * epsilon if method == "fgsm_rs" and epsilon else 2 / 255
        step_size = check_pixel_amount(
            options.get("step_size", default_step), "adversarial_training.step_size", zero=False
        )
        steps = check_int(options.get("steps", 7 if method == "pgd" else 1), "adversarial_training.steps", 1)
        if method == "fgsm_rs" and steps != 1:
            raise UserError(f"adversarial_training.steps is 1 for fgsm_rs (one step from a random start), got {steps}")
        val_steps = check_int(options.get("val_steps", 10), "adversarial_training.val_steps", 1)
        return cls(
            method=method,
            settings=AttackSettings(epsilon, step_size, steps),
            start_epoch=check_int(options.get("start_epoch", 0), "adversarial_training.start_epoch", 0),
            val_settings=AttackSettings(epsilon, 2.5 * epsilon / val_steps if epsilon else step_size, val_steps),
            val_batches=check_int(options.get("val_batches", 2), "adversarial_training.val_batches", 1),
            seed=check_int(options.get("seed", 0), "adversarial_training.seed", None),
        )

    def describe(self) -> str:
        """The method in words, e.g. ``PGD-7 adversarial training, ε 8/255``."""
        name = f"PGD-{self.settings.steps}" if self.method == "pgd" else "fast FGSM (random start)"
        start = f" from epoch {self.start_epoch}" if self.start_epoch else ""
        return f"{name} adversarial training{start}, ε {format_pixels(self.settings.epsilon)}"

    def active(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` trains on adversarial examples."""
        return epoch >= self.start_epoch

    def training_batch(
        self, network: nn.Module, images: Tensor, labels: Tensor, mean: Tensor, std: Tensor, seed: int
    ) -> Tensor:
        """The adversarial version of a normalised training batch, normalised (no gradient attached).

        Args:
            network: The classifier; attacked in eval mode, its modes restored.
            images: The batch as the model sees it (augmented, normalised).
            labels: Its labels.
            mean: Per-channel mean, ``1 x C x 1 x 1``, on the batch's device.
            std: Per-channel standard deviation, the same shape.
            seed: Seed of this batch's random start (fold in the step and rank).
        """
        return self._perturb(self.method, self.settings, network, images, labels, mean, std, seed)

    def validation_batch(
        self, network: nn.Module, images: Tensor, labels: Tensor, mean: Tensor, std: Tensor, seed: int
    ) -> Tensor:
        """The PGD version of a normalised validation batch (:attr:`val_settings`), normalised."""
        return self._perturb("pgd", self.val_settings, network, images, labels, mean, std, seed)

    @staticmethod
    def _perturb(
        method: str,
        settings: AttackSettings,
        network: nn.Module,
        images: Tensor,
        labels: Tensor,
        mean: Tensor,
        std: Tensor,
        seed: int,
    ) -> Tensor:
        with torch.inference_mode(False), torch.enable_grad(), preserved_modes(network):
            model = PixelSpaceNetwork(network, mean.flatten().tolist(), std.flatten().tolist()).to(images.device)
            pixels = to_pixels(images.detach().clone(), model.mean, model.std)
            with seeded(images.device, seed):
                adversarial = build_attack(method, model, settings)(pixels, labels.detach().clone())
        return to_normalized(adversarial, mean, std).detach()
