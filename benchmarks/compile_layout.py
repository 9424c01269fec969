"""ResNet-20 eager against torch.compile against channels-last, dense and with 50 % of its channels removed.

Four settings of the same network: eager, channels-last (NHWC weights and inputs), compiled
(``torch.compile``, inductor by default) and compiled + channels-last; each dense and with half of
every channel group removed (``lit_prune.pruning.channel_surgery`` on L1 filter norms, residual
streams included, as ``benchmarks/structured_speedup.py``). For each it times a training step (SGD
with momentum, batch 128) and inference at batch 128 and 1 (``torch.inference_mode``), all in one
process, the settings interleaved round after round; figures are medians over rounds of the median
of ``--repeats`` calls (wall clock, the device synchronised around each call). The first call of a
compiled setting is timed apart: it is the compile time a run pays once per graph (training,
evaluation and every new input shape each need one). Inductor compiles into a fresh, empty cache
directory unless ``--warm-cache``, so that figure is a cold start.

    OMP_NUM_THREADS=1 python benchmarks/compile_layout.py [--threads 1] [--rounds 3] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import atexit
import copy
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_prune.models import create_model
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.structured_importance import select_channels, structured_importance

SETTINGS = {
    "eager": (False, False),
    "channels_last": (True, False),
    "compiled": (False, True),
    "compiled_nhwc": (True, True),
}
CHANNEL_FRACTION = 0.5


def halve_channels(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with half of every channel group (lowest L1 norm) removed."""
    pruned = copy.deepcopy(model)
    groups = prunable_groups(pruned, include_residual=True, kinds=["channels"])
    shrink_groups_(
        pruned, select_channels(structured_importance(pruned, groups, "l1"), CHANNEL_FRACTION, scope="layer")
    )
    return pruned


class Setting:
    """One network in one setting: a training step and inference, each timed, with first calls apart."""

    def __init__(self, network: nn.Module, channels_last: bool, compiled: bool, backend: str, device: torch.device):
        self.channels_last = channels_last
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.train_net = copy.deepcopy(network).to(device, memory_format=layout).train()
        self.eval_net = copy.deepcopy(network).to(device, memory_format=layout).eval()
        self.train_call = torch.compile(self.train_net, backend=backend) if compiled else self.train_net
        self.eval_call = torch.compile(self.eval_net, backend=backend) if compiled else self.eval_net
        self.optimizer = torch.optim.SGD(self.train_net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.first_call_s: dict[str, float] = {}

    def layout(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def train_step(self, images: Tensor, labels: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.train_call(images), labels).backward()
        self.optimizer.step()

    def first_calls(self, train_batch: tuple[Tensor, Tensor], inference: dict[str, Tensor]) -> None:
        """Runs (and times) the first call of each graph: training, and inference at each batch size."""
        images, labels = train_batch
        self.first_call_s["train"] = _seconds(lambda: self.train_step(self.layout(images), labels))
        for name, batch in inference.items():
            self.first_call_s[name] = _seconds(lambda batch=batch: self._infer(self.layout(batch)))

    def _infer(self, images: Tensor) -> None:
        with torch.inference_mode():
            self.eval_call(images)
        _synchronize(images.device)

    def train_ms(self, batch: tuple[Tensor, Tensor], repeats: int) -> float:
        """Median ms of a training step, after one untimed step."""
        images, labels = self.layout(batch[0]), batch[1]
        self.train_step(images, labels)
        return _median_ms(lambda: self.train_step(images, labels), repeats, images.device)

    def infer_ms(self, batch: Tensor, repeats: int) -> float:
        """Median ms of an inference call, after one untimed call."""
        images = self.layout(batch)
        self._infer(images)
        return _median_ms(lambda: self._infer(images), repeats, images.device)


def _seconds(call: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _median_ms(call: Callable[[], None], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        call()
        _synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the settings")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--inference-batches", type=int, nargs="+", default=[128, 1])
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk caches on")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not args.warm_cache:
        cold_cache = tempfile.mkdtemp(prefix="compile_layout_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cold_cache
        atexit.register(shutil.rmtree, cold_cache, ignore_errors=True)
    torch.set_num_threads(args.threads)
    # Every setting and input shape is one more graph of the same ResNet.forward code object; past
    # dynamo's default limit of 8 it would silently run the rest eagerly.
    torch._dynamo.config.recompile_limit = 64
    device = torch.device(args.device)

    torch.manual_seed(0)
    dense = create_model("resnet20", num_classes=10)
    networks = {"dense": dense, "50% channels": halve_channels(dense)}
    train_batch = (
        torch.randn(args.train_batch, 3, 32, 32, device=device),
        torch.randint(0, 10, (args.train_batch,), device=device),
    )
    inference = {f"infer_b{size}": torch.randn(size, 3, 32, 32, device=device) for size in args.inference_batches}

    settings: dict[tuple[str, str], Setting] = {}
    for width, network in networks.items():
        for name, (channels_last, compiled) in SETTINGS.items():
            setting = Setting(network, channels_last, compiled, args.backend, device)
            setting.first_calls(train_batch, inference)
            settings[(width, name)] = setting
            print(
                f"first calls {width:13s} {name:14s} "
                + " ".join(f"{k} {v:.1f}s" for k, v in setting.first_call_s.items()),
                flush=True,
            )

    measures = ["train", *inference]
    times: dict[tuple[str, str, str], list[float]] = {(w, s, m): [] for (w, s) in settings for m in measures}
    for _ in range(args.rounds):
        for (width, name), setting in settings.items():
            times[(width, name, "train")].append(setting.train_ms(train_batch, args.repeats))
            for measure, batch in inference.items():
                times[(width, name, measure)].append(setting.infer_ms(batch, args.repeats))

    print(
        f"\ndevice {device} | {platform.processor() or platform.machine()} | torch {torch.__version__} "
        f"| threads {torch.get_num_threads()} | backend {args.backend} "
        f"| median of {args.rounds} rounds x {args.repeats} calls"
    )
    header = " | ".join(f"{m} ms (x eager)" for m in measures)
    print(f"| network | setting | {header} | first calls s ({', '.join(measures)}) |")
    print("|---|---|" + "---:|" * (len(measures) + 1))
    for (width, name), setting in settings.items():
        cells = []
        for measure in measures:
            value = statistics.median(times[(width, name, measure)])
            eager = statistics.median(times[(width, "eager", measure)])
            cells.append(f"{value:.2f} ({eager / value:.2f}x)")
        first = ", ".join(f"{setting.first_call_s[m]:.1f}" for m in measures)
        print(f"| {width} | {name} | {' | '.join(cells)} | {first} |")


if __name__ == "__main__":
    main()
