"""Robustness of (pruned) networks: L∞ attacks in pixel space, robust accuracy, adversarial training.

No Lightning here: :mod:`callbacks.robustness` decides when to evaluate, and
:class:`lit_prune.module.ImageClassifier` trains on the examples of :mod:`.training`.
"""

from lit_prune.robustness.attacks import (
    ATTACKS,
    AttackSettings,
    PixelSpaceNetwork,
    build_attack,
    check_attack_names,
    check_pixel_amount,
    format_pixels,
    normalization_of,
)
from lit_prune.robustness.evaluation import RobustCounts, count_robust, robust_accuracy, robustness_section
from lit_prune.robustness.training import METHODS, AdversarialTraining

__all__ = [
    "ATTACKS",
    "METHODS",
    "AdversarialTraining",
    "AttackSettings",
    "PixelSpaceNetwork",
    "RobustCounts",
    "build_attack",
    "check_attack_names",
    "check_pixel_amount",
    "count_robust",
    "format_pixels",
    "normalization_of",
    "robust_accuracy",
    "robustness_section",
]
