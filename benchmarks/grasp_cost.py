"""Cost of a GraSP (and a SNIP) scoring pass relative to one training step on the same batch.

GraSP (Wang et al. 2020) needs the gradient ``g`` of the calibration loss and then the
Hessian-gradient product ``Hg``, obtained by differentiating ``g · ∇L`` (a double backward);
SNIP (Lee et al. 2019) needs one gradient. This script times, on the same batch of random
images, one SGD training step (forward, backward, momentum update), ``snip_scores`` and
``grasp_scores`` (``lit_prune.pruning.saliency``) over all conv/linear weights, for ResNet-20
and VGG16-BN. The three run interleaved in one process (one of each per round, after a warm-up),
and the script prints the median time of each and its ratio to the training step.

    python benchmarks/grasp_cost.py [--batch-size 100] [--rounds 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_prune.models import create_model
from lit_prune.pruning import prunable_parameters
from lit_prune.pruning.saliency import grasp_scores, snip_scores

MODELS = ("resnet20", "vgg16_bn")
NUM_CLASSES = 10


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_variants(name: str, device: torch.device, images: Tensor, labels: Tensor) -> dict[str, Callable[[], None]]:
    """The training step and the two scoring passes, each on its own copy of the same network."""
    torch.manual_seed(0)
    reference = create_model(name, num_classes=NUM_CLASSES)
    trained = create_model(name, num_classes=NUM_CLASSES).to(device).train()
    trained.load_state_dict(reference.state_dict())
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scored = create_model(name, num_classes=NUM_CLASSES).to(device)
    scored.load_state_dict(reference.state_dict())
    params = prunable_parameters(scored)
    batches = [(images, labels)]

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(trained(images), labels).backward()
        optimizer.step()

    def snip() -> None:
        snip_scores(scored, params, batches)

    def grasp() -> None:
        grasp_scores(scored, params, batches, temperature=200.0)

    return {"training step": train_step, "SNIP scores": snip, "GraSP scores": grasp}


def time_variants(variants: dict[str, Callable[[], None]], device: torch.device, rounds: int) -> dict[str, float]:
    """Median seconds per call of each variant, interleaved one call each per round after a warm-up."""
    for run in variants.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            _synchronize(device)
            start = time.perf_counter()
            run()
            _synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100, help="100 = GraSP's 10 samples per class on CIFAR-10")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each times one call of each variant")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator).to(device)

    print(
        f"batch {args.batch_size}, 3 x 32 x 32, {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds"
    )
    print(f"{'model':10s} {'variant':15s} {'median ms':>12s} {'ratio to step':>14s}")
    for name in args.models:
        medians = time_variants(build_variants(name, device, images, labels), device, args.rounds)
        step = medians["training step"]
        for variant, median in medians.items():
            print(f"{name:10s} {variant:15s} {median * 1e3:12.1f} {median / step:14.2f}")


if __name__ == "__main__":
    main()
