"""Cost of regression channel pruning (He et al. 2017) on VGG16-BN, and what it buys in latency.

Prunes VGG16-BN with the per-layer ratios of ``configs/e7_regression_vgg16bn_cifar10.yaml``
(LASSO channel selection + least-squares reconstruction, layer by layer, on real images: the
offline digits at 32 x 32, so nothing is downloaded) and prints, per layer, the time to gather the
calibration pairs, to select the channels (LASSO, with the number of problems solved) and to
reconstruct the weights (least squares and surgery), with the relative feature-map errors. Then
it times inference of the network before and after pruning in the same process, alternating
between the two, with ``lit_prune.profiling.measure_latency`` (median of timed batches), and
counts parameters and MACs.

The network is randomly initialised (its batch-norm statistics estimated on the calibration
images): the cost of the regression depends on the shapes and the number of samples, not on
what the network learnt, while the errors of a trained network differ.

    python benchmarks/regression_pruning_cost.py [--images 512] [--positions 10] [--threads 1]
        [--latency-batches 1 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from datamodules import DigitsDataModule
from lit_prune.config_bases import compose_config
from lit_prune.models import create_model
from lit_prune.profiling import count_macs, measure_latency
from lit_prune.pruning.regression_pruning import LayerPruningResult, regression_channel_prune_

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "e7_regression_vgg16bn_cifar10.yaml"


def config_ratios() -> dict[str, float]:
    """The per-layer ratios of the E7 config (the last callback's ``channel_fraction``)."""
    config = compose_config(CONFIG)
    return dict(config["trainer"]["callbacks"][-1]["init_args"]["channel_fraction"])


def calibration_batches(images: int, batch_size: int) -> list[Tensor]:
    """The first ``images`` digits of the training split, as normalised 3 x 32 x 32 batches."""
    data = DigitsDataModule(batch_size=batch_size, seed=0)
    data.setup("fit")
    batches, count = [], 0
    for batch in data.train_dataloader():
        if count >= images:
            break
        batches.append(data.transform_batch(batch, train=False)[0])
        count += batches[-1].shape[0]
    return batches


def network_with_statistics(batches: list[Tensor]) -> nn.Module:
    """VGG16-BN with batch-norm running statistics of the calibration images, in eval mode."""
    torch.manual_seed(0)
    model = create_model("vgg16_bn", num_classes=10)
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return model.eval()


def print_layers(layers: list[LayerPruningResult]) -> None:
    print(
        "| layer | input channels | samples | collect s | selection s (LASSO fits) | reconstruction s "
        "| error naive | error reconstructed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for layer in layers:
        print(
            f"| {layer.layer} | {layer.channels} -> {layer.kept} | {layer.samples} | {layer.collect_seconds:.2f} "
            f"| {layer.selection_seconds:.2f} ({layer.lasso_fits}{'' if layer.exact else ', top-k'}) "
            f"| {layer.reconstruction_seconds:.2f} | {layer.error_naive:.4f} | {layer.error_reconstructed:.4f} |"
        )
    totals = [
        sum(getattr(layer, key) for layer in layers)
        for key in ("collect_seconds", "selection_seconds", "reconstruction_seconds")
    ]
    print(f"| total | | | {totals[0]:.2f} | {totals[1]:.2f} | {totals[2]:.2f} | | |")


def latency_table(before: nn.Module, after: nn.Module, batch_sizes: list[int], rounds: int) -> None:
    print("| batch | before ms | after ms | speed-up |")
    print("|---:|---:|---:|---:|")
    for batch_size in batch_sizes:
        inputs = torch.randn(batch_size, 3, 32, 32)
        times: dict[str, list[float]] = {"before": [], "after": []}
        for _ in range(rounds):
            for name, model in (("before", before), ("after", after)):
                times[name].append(measure_latency(model, inputs, warmup=3, repeats=10).median_ms)
        dense, pruned = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"| {batch_size} | {dense:.1f} | {pruned:.1f} | {dense / pruned:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="calibration images (digits)")
    parser.add_argument("--batch-size", type=int, default=128, help="calibration batch size")
    parser.add_argument("--positions", type=int, default=10, help="sampled output positions per image and layer")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    parser.add_argument("--latency-batches", type=int, nargs="+", default=[1, 128])
    parser.add_argument("--rounds", type=int, default=3, help="alternating latency rounds; the median is printed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    batches = calibration_batches(args.images, args.batch_size)
    reference = network_with_statistics(batches)
    network = copy.deepcopy(reference)
    ratios = config_ratios()
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}; "
        f"{sum(b.shape[0] for b in batches)} calibration images x {args.positions} positions"
    )
    started = time.perf_counter()
    result = regression_channel_prune_(network, reference, batches, ratios, positions_per_image=args.positions)
    elapsed = time.perf_counter() - started
    print_layers(result.layers)
    print(f"\nwhole regression: {elapsed:.1f} s")
    example = batches[0][:1]
    macs_before, macs_after = count_macs(reference, example), count_macs(network, example)
    print(
        f"parameters {macs_before.params_total:,} -> {macs_after.params_total:,} "
        f"({result.removed_parameter_fraction:.1%} removed); MACs per image {macs_before.macs:,} -> "
        f"{macs_after.macs:,} ({1 - macs_after.macs / macs_before.macs:.1%} removed)\n"
    )
    latency_table(reference, network, args.latency_batches, args.rounds)


if __name__ == "__main__":
    main()
