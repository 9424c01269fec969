"""Inference latency of CNNs dense vs. with half of every layer's channels physically removed.

For ResNet-20, ResNet-18 and VGG16-BN the pruned copy loses 50 % of the channels of *every*
channel group (``select_channels(..., channel_fraction=0.5, scope="layer")`` on L1 filter norms, residual
streams included): a channel fraction per group, not a parameter fraction. Since most
convolutions lose half their inputs and half their outputs, about a quarter of the MACs and
parameters remain. Dense and pruned models are timed alternately in one process
(``lit_prune.profiling.measure_latency``: warm-up, then the median of timed batches; CUDA events on
a GPU), round after round, and the script prints the median over rounds next to the MAC ratio
(``lit_prune.profiling.count_macs``) and the parameter counts.

    python benchmarks/structured_speedup.py [--batch-size 32] [--rounds 5] [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics

import torch
from torch import nn

from lit_prune.models import create_model
from lit_prune.profiling import count_macs, measure_latency
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.structured_importance import select_channels, structured_importance

MODELS = ("resnet20", "resnet18", "vgg16_bn")
CHANNEL_FRACTION = 0.5


def halve_channels(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with ``CHANNEL_FRACTION`` of each group's channels (lowest L1 norm) removed."""
    pruned = copy.deepcopy(model)
    groups = prunable_groups(pruned, include_residual=True, kinds=["channels"])
    scores = structured_importance(pruned, groups, "l1")
    shrink_groups_(pruned, select_channels(scores, CHANNEL_FRACTION, scope="layer"))
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternations of dense and pruned per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per measurement")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    inputs = torch.randn(args.batch_size, 3, 32, 32, device=device)
    variants: dict[str, dict[str, nn.Module]] = {}
    for name in MODELS:
        dense = create_model(name, num_classes=10).to(device).eval()
        variants[name] = {"dense": dense, "pruned": halve_channels(dense).eval()}

    times: dict[tuple[str, str], list[float]] = {(name, kind): [] for name in MODELS for kind in ("dense", "pruned")}
    for _ in range(args.rounds):
        for name in MODELS:
            for kind, model in variants[name].items():
                times[(name, kind)].append(measure_latency(model, inputs, warmup=1, repeats=args.repeats).median_ms)

    print(
        f"device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} "
        f"| {platform.processor() or platform.machine()} | batch {args.batch_size} "
        f"| median of {args.rounds} rounds x {args.repeats} batches"
    )
    print(
        "| model | params dense | params pruned | MACs dense | MACs pruned | MAC ratio "
        "| ms dense | ms pruned | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in MODELS:
        dense_macs = count_macs(variants[name]["dense"], inputs)
        pruned_macs = count_macs(variants[name]["pruned"], inputs)
        dense_ms = statistics.median(times[(name, "dense")])
        pruned_ms = statistics.median(times[(name, "pruned")])
        print(
            f"| {name} | {dense_macs.params_total:,} | {pruned_macs.params_total:,} | {dense_macs.macs / 1e6:.1f}M "
            f"| {pruned_macs.macs / 1e6:.1f}M | {pruned_macs.macs / dense_macs.macs:.3f} | {dense_ms:.2f} "
            f"| {pruned_ms:.2f} | {dense_ms / pruned_ms:.2f}x |"
        )


if __name__ == "__main__":
    main()
