"""Time per training step of ResNet-20: dense, our masks at 90 %, and torch.nn.utils.prune at 90 %.

Lightning's ``ModelPruning`` callback prunes through ``torch.nn.utils.prune``: every pruned
module gets ``weight_orig`` and ``weight_mask`` and a forward pre-hook that recomputes
``weight = weight_orig * weight_mask`` on every forward pass. lit-prune keeps the zeros in the
ordinary weights and instead zeroes gradients before and weights after each optimizer step
(``MaskEnforcer``). The three variants run interleaved in one process, on the same batches, and
the script prints the median step time of each and its ratio to dense.

    python benchmarks/mask_overhead.py [--batch-size 128] [--rounds 5] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from lit_prune.models import create_model
from lit_prune.pruning import MaskEnforcer, global_prune_mask, magnitude_scores, prunable_parameters

SPARSITY = 0.9


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_step(model: nn.Module, before_step: Callable[[], None], after_step: Callable[[], None]):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        before_step()
        optimizer.step()
        after_step()

    return step


def _nothing() -> None:
    return None


def build_variants(device: torch.device) -> dict[str, Callable[[torch.Tensor, torch.Tensor], None]]:
    """The three training steps, each on its own copy of the same initial ResNet-20."""
    torch.manual_seed(0)
    reference = create_model("resnet20", num_classes=10)

    dense = create_model("resnet20", num_classes=10).to(device)
    dense.load_state_dict(reference.state_dict())

    ours = create_model("resnet20", num_classes=10).to(device)
    ours.load_state_dict(reference.state_dict())
    mask = global_prune_mask(magnitude_scores(prunable_parameters(ours)), SPARSITY)
    mask.apply_(ours)
    enforcer = MaskEnforcer(ours, mask)

    hooked = create_model("resnet20", num_classes=10).to(device)
    hooked.load_state_dict(reference.state_dict())
    targets = [(m, "weight") for m in hooked.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=SPARSITY)

    return {
        "dense": _make_step(dense, _nothing, _nothing),
        "lit-prune masks": _make_step(ours, enforcer.zero_gradients_, enforcer.zero_weights_),
        "torch.nn.utils.prune (ModelPruning)": _make_step(hooked, _nothing, _nothing),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the three variants")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (args.batch_size,), device=device)
    variants = build_variants(device)
    for step in variants.values():
        for _ in range(3):
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

    dense = statistics.median(times["dense"])
    print(f"ResNet-20, batch {args.batch_size}, {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'variant':40s} {'median ms/step':>15s} {'ratio to dense':>15s}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:40s} {median * 1e3:15.2f} {median / dense:15.3f}")


if __name__ == "__main__":
    main()
