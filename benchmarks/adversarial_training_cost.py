"""Time per training step of ResNet-20: natural, fast FGSM with random start, and PGD-7 adversarial training.

The adversarial steps are the ones ``ImageClassifier(adversarial_training=...)`` takes
(:class:`lit_prune.robustness.AdversarialTraining`: the attack from ``torchattacks`` on the
network with its normalisation in front, in pixel space, then the training step on the
adversarial batch). PGD-7 (Madry et al. 2018) costs about 7 extra forward-backward passes through
the network (input gradients only) per step, fast FGSM (Wong et al. 2020) about one. The three
variants run interleaved in one process on the same batch, each on its own copy of the same
initial network, and the script prints the median step time of each and its ratio to natural.

    python benchmarks/adversarial_training_cost.py [--batch-size 128] [--rounds 3] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lit_prune.models import create_model
from lit_prune.robustness import AdversarialTraining

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(model: nn.Module, adversary: AdversarialTraining | None) -> Callable[[torch.Tensor, torch.Tensor], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    device = next(model.parameters()).device
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device).view(1, -1, 1, 1)
    calls = [0]

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        model.train()
        if adversary is not None:
            calls[0] += 1
            images = adversary.training_batch(model, images, labels, mean, std, seed=calls[0])
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def build_variants(device: torch.device) -> dict[str, Callable[[torch.Tensor, torch.Tensor], None]]:
    """Natural, fast-FGSM and PGD-7 training steps, each on its own copy of the same initial ResNet-20."""
    torch.manual_seed(0)
    reference = create_model("resnet20", num_classes=10)
    variants = {}
    for name, options in (
        ("natural", None),
        ("fast FGSM, random start (Wong et al. 2020)", {"method": "fgsm_rs", "epsilon": "8/255"}),
        ("PGD-7 (Madry et al. 2018)", {"method": "pgd", "epsilon": "8/255", "step_size": "2/255", "steps": 7}),
    ):
        model = create_model("resnet20", num_classes=10).to(device)
        model.load_state_dict(reference.state_dict())
        variants[name] = _make_step(model, AdversarialTraining.from_options(options))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the three variants")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(args.batch_size, 3, 32, 32, generator=generator)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, -1, 1, 1), torch.tensor(CIFAR10_STD).view(1, -1, 1, 1)
    images = ((pixels - mean) / std).to(device)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator).to(device)
    variants = build_variants(device)
    for step in variants.values():
        step(images, labels)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            for _ in range(args.steps):
                _synchronize(device)
                start = time.perf_counter()
                step(images, labels)
                _synchronize(device)
                times[name].append(time.perf_counter() - start)
    natural = statistics.median(times["natural"])
    print(
        f"ResNet-20, batch {args.batch_size}, {device}, {torch.get_num_threads()} intra-op thread(s), "
        f"median of {args.rounds * args.steps} steps"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<45} {1000 * median:9.1f} ms/step   {median / natural:5.2f}x natural")


if __name__ == "__main__":
    main()
