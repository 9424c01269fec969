"""L∞ attacks in pixel space, built from user options with ``torchattacks``.

The data modules normalise on the device, so a batch reaches the model as ``(x - mean) / std``.
An attack's budget is stated in pixel units (``epsilon: 8/255`` is 8/255 of the ``[0, 1]`` range),
so the attack must perturb un-normalised images and clip them to ``[0, 1]``, while the network
must keep seeing normalised ones. :class:`PixelSpaceNetwork` is the network with its
normalisation in front; an attack of ``torchattacks`` (FGSM of Goodfellow et al. 2015, PGD of
Madry et al. 2018, the fast FGSM with random start of Wong et al. 2020) runs against it on
:func:`to_pixels` images, and :func:`to_normalized` turns the result back into model input.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
import torchattacks
from torch import Tensor, nn

from lit_prune.errors import UserError, UserTypeError
from lit_prune.validation import check_bool, check_int

__all__ = [
    "ATTACKS",
    "AttackSettings",
    "PixelSpaceNetwork",
    "build_attack",
    "check_attack_names",
    "check_pixel_amount",
    "format_pixels",
    "normalization_of",
    "preserved_modes",
    "seeded",
    "to_normalized",
    "to_pixels",
]

ATTACKS = ("fgsm", "pgd", "fgsm_rs")
"""The attacks lit-prune builds: name to ``torchattacks`` class in :func:`build_attack`."""

_LIBRARY_CLASSES = {"fgsm": "FGSM", "pgd": "PGD", "fgsm_rs": "FFGSM"}


def check_pixel_amount(value: object, name: str, *, zero: bool = True) -> float:
    """Accepts an amount in pixel units: a number in ``[0, 1]`` or a fraction written ``"8/255"``.

    Args:
        value: The option's value (YAML ``8/255`` arrives as the text ``"8/255"``).
        name: The option's name.
        zero: Allow 0 (an attack of budget 0 leaves the images as they are).

    Returns:
        The amount as a float.

    Raises:
        UserTypeError: If ``value`` is neither a number nor a fraction in text.
        UserError: If it lies outside ``[0, 1]`` (``(0, 1]`` without ``zero``).
    """
    interval = f"{'[' if zero else '('}0, 1]"
    message = f"{name} must be a number in {interval} in pixel units (e.g. 8/255 of the [0, 1] range), got {value!r}"
    if isinstance(value, str):
        try:
            value = float(Fraction(value.replace(" ", "")))
        except (ValueError, ZeroDivisionError):
            raise UserTypeError(message) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserTypeError(message)
    if not (0.0 <= value <= 1.0) or (not zero and value == 0.0):
        raise UserError(message)
    return float(value)


def format_pixels(value: float) -> str:
    """A pixel amount as ``8/255`` when it is a whole number of 255ths, else as a decimal."""
    scaled = value * 255
    return f"{round(scaled)}/255" if round(scaled) and abs(scaled - round(scaled)) < 1e-6 else f"{value:.4g}"


def check_attack_names(names: object, name: str = "attacks") -> tuple[str, ...]:
    """Accepts a non-empty list of distinct attack names from :data:`ATTACKS`.

    Raises:
        UserError: If the list is empty or repeats a name, or a name is not one lit-prune builds
            (the message says whether ``torchattacks`` has such an attack at all).
    """
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise UserError(f"{name} must be a non-empty list of attacks from {list(ATTACKS)}, got {names!r}")
    for attack in names:
        if attack not in ATTACKS:
            library = str(attack).lower() in {name.lower() for name in torchattacks.__all__}
            known = (
                f"torchattacks {torchattacks.__version__} has {attack!r}, but lit-prune builds only the L∞ attacks "
                "it can set from epsilon, step_size and steps"
                if library
                else f"torchattacks {torchattacks.__version__} has no attack {attack!r}"
            )
            raise UserError(f"{name}: {known}; choose from {list(ATTACKS)}")
    if len(set(names)) != len(names):
        raise UserError(f"{name} must not repeat an attack, got {list(names)}")
    return tuple(names)


@dataclass(frozen=True)
class AttackSettings:
    """The budget of an L∞ attack, in pixel units of the ``[0, 1]`` range.

    Attributes:
        epsilon: Largest change of a pixel, in ``[0, 1]``.
        step_size: Change per PGD step (and of the fast FGSM's one step), in ``(0, 1]``.
        steps: PGD steps, >= 1.
        restarts: PGD runs from independent random starts; an example counts as robust only if it
            survives every one, >= 1.
        random_start: Start PGD from a uniform draw in the ε-ball (Madry et al. 2018).
    """

    epsilon: float
    step_size: float
    steps: int = 10
    restarts: int = 1
    random_start: bool = True

    @classmethod
    def checked(
        cls,
        epsilon: object,
        step_size: object,
        steps: object = 10,
        restarts: object = 1,
        random_start: object = True,
    ) -> AttackSettings:
        """Settings from user options, each checked with a message that says what is allowed.

        Raises:
            UserError: If ε is outside [0, 1], the step size outside (0, 1], steps or restarts below 1.
        """
        return cls(
            epsilon=check_pixel_amount(epsilon, "epsilon"),
            step_size=check_pixel_amount(step_size, "step_size", zero=False),
            steps=check_int(steps, "steps", 1, meaning="PGD iterations"),
            restarts=check_int(restarts, "restarts", 1, meaning="PGD runs from random starts"),
            random_start=check_bool(random_start, "random_start"),
        )


def normalization_of(datamodule: object, who: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std with which a data module normalises its batches.

    Args:
        datamodule: The run's data module (lit-prune's have ``mean`` and ``std`` attributes).
        who: What needs them, for the message.

    Returns:
        ``(mean, std)`` on the ``[0, 1]`` pixel scale.

    Raises:
        UserError: If there is no data module, or it does not say how it normalises.
    """
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if datamodule is None or mean is None or std is None:
        what = "no data module" if datamodule is None else f"the data module {type(datamodule).__name__}"
        raise UserError(
            f"{who} attacks in pixel space and needs the normalisation of the data: {what} has no per-channel "
            "'mean' and 'std' (on the [0, 1] scale); use one of lit-prune's data modules (datamodules.*) or give "
            "yours mean and std attributes"
        )
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != len(std) or not mean or any(v <= 0 for v in std):
        raise UserError(f"{who}: the data module's mean {mean} and std {std} must have one entry per channel, std > 0")
    return mean, std


class PixelSpaceNetwork(nn.Module):
    """A network with its input normalisation in front: takes images in ``[0, 1]``, returns logits.

    The wrapper is built for an attack and dropped after it; it is never attached to the module
    that owns the network, so it adds nothing to a state dict.

    Args:
        network: The classifier, which expects normalised images.
        mean: Per-channel mean on the ``[0, 1]`` scale.
        std: Per-channel standard deviation on the ``[0, 1]`` scale.
    """

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.training = network.training  # torchattacks restores the mode it finds here after an attack
        device = _device_of(network)
        self.register_buffer("mean", torch.tensor(mean, device=device).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, device=device).view(1, -1, 1, 1), persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        """Logits of the network for images in ``[0, 1]``."""
        return self.network(to_normalized(pixels, self.mean, self.std))


def to_pixels(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Normalised model input back to images in ``[0, 1]`` (clipped, against rounding)."""
    return (images * std + mean).clamp_(0.0, 1.0)


def to_normalized(pixels: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Images in ``[0, 1]`` to model input, ``(x - mean) / std``."""
    return (pixels - mean) / std


def build_attack(name: str, model: PixelSpaceNetwork, settings: AttackSettings) -> torchattacks.Attack:
    """A ``torchattacks`` attack on ``model`` (pixel images in, pixel images in ``[0, 1]`` out).

    ``fgsm``: one step of ε along the gradient's sign (Goodfellow et al. 2015, "Explaining and
    Harnessing Adversarial Examples"). ``pgd``: ``steps`` steps of ``step_size``, projected on the
    ε-ball and clipped to ``[0, 1]``, from a uniform random start (Madry et al. 2018, "Towards Deep
    Learning Models Resistant to Adversarial Attacks"). ``fgsm_rs``: a uniform random start in the
    ε-ball, then one step of ``step_size`` (Wong et al. 2020, "Fast is better than free", who use
    1.25 ε), projected and clipped.

    Args:
        name: One of :data:`ATTACKS`.
        model: The network to attack, in pixel space.
        settings: The budget.

    Returns:
        The attack; call it as ``attack(pixels, labels)``.
    """
    check_attack_names([name], "attack")
    with contextlib.redirect_stdout(io.StringIO()):
        if name == "fgsm":
            return torchattacks.FGSM(model, eps=settings.epsilon)
        if name == "fgsm_rs":
            return torchattacks.FFGSM(model, eps=settings.epsilon, alpha=settings.step_size)
        return torchattacks.PGD(
            model,
            eps=settings.epsilon,
            alpha=settings.step_size,
            steps=settings.steps,
            random_start=settings.random_start,
        )


@contextlib.contextmanager
def preserved_modes(network: nn.Module) -> Iterator[None]:
    """Restores the train/eval mode of every submodule of ``network`` afterwards.

    ``torchattacks`` puts the attacked model in eval mode and back into train mode wholesale;
    this puts each submodule back as it was (a frozen batch norm stays in eval).
    """
    modes = [(module, module.training) for module in network.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Runs the block on a random state seeded by ``seed``, and restores the global one afterwards.

    The attacks' random starts then depend on the seed (and whatever the caller folds into it:
    step, batch, rank), not on the global random state, which a checkpoint does not restore.
    """
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[cuda[0]].manual_seed(seed)
        yield


def _device_of(network: nn.Module) -> torch.device:
    for tensor in network.parameters():
        return tensor.device
    return torch.device("cpu")
