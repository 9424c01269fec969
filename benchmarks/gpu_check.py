"""One GPU check of lit-prune's fast paths, written to one JSON file, in at most eight minutes.

Run it on a CUDA machine from the repository root (the figures of ``benchmarks/README.md`` come
from this command)::

    python benchmarks/gpu_check.py --output gpu_check.json

Parts, each timed, each ``ok``, ``skipped`` (with the reason: no CUDA, one GPU, time budget
spent) or ``failed`` (with the error), never a made-up figure:

- ``epoch``: one ResNet-20 training epoch on 50,000 CIFAR-shaped random uint8 images held by
  ``CIFAR10DataModule`` in memory, augmented and normalised on the device, through Lightning
  (after a warm-up epoch), against the same number of steps of a plain loop over batches already
  on the device, and the data path alone (loader + ``transform_batch``): the share of the epoch the
  data path and the loop add;
- ``precision``: a training step in float32 against bf16 autocast (``bf16-mixed``);
- ``layout_compile``: a training step eager, channels-last, ``torch.compile`` and both, with the
  compile time;
- ``masks``: a training step dense, with lit-prune's masks at 90 % (``MaskEnforcer``, what
  ``ImageClassifier.set_pruning_mask`` installs) and with ``torch.nn.utils.prune`` at 90 %
  (global L1, what Lightning's ``ModelPruning`` uses);
- ``structured_inference``: inference latency dense against 50 % of every channel group removed,
  at batch 1 and 128 (``lit_prune.profiling.measure_latency``: CUDA events on a GPU);
- ``semi_structured``: ViT-Tiny (patch 4) with 2:4 masks on its MLP linears, dense float16 against
  ``torch.sparse.to_sparse_semi_structured`` (``lit_prune.pruning.semi_structured``), the whole
  model and one MLP block; the speed-up is reported as measured, also when it is below 1;
- ``energy``: one reading of ``lit_prune.profiling.measure_energy`` (NVML on a GPU);
- ``ddp``: a two-process DDP fit of a few steps when there are two GPUs.

``--device cpu --quick`` runs every part small on a CPU (the test suite does, so the script
cannot rot); there, the compile part uses the ``eager`` backend (TorchDynamo's capture only:
inductor's C++ build takes a minute per graph on a CPU) and the CUDA-only parts are skipped with
their reason.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import prune

from datamodules import CIFAR10DataModule
from datamodules.base import InMemoryImageDataset
from lit_prune.atomic_files import atomic_write
from lit_prune.models import create_model
from lit_prune.module import ImageClassifier
from lit_prune.profiling import measure_energy, measure_latency
from lit_prune.pruning import MaskEnforcer, global_prune_mask, magnitude_scores, prunable_parameters
from lit_prune.pruning.channel_groups import prunable_groups
from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.nm_sparsity import nm_prune_mask
from lit_prune.pruning.semi_structured import (
    SEMI_STRUCTURED_PATTERN,
    masked_copy,
    semi_structured_plan,
    semi_structured_unsupported,
    to_semi_structured,
)
from lit_prune.pruning.structured_importance import select_channels, structured_importance

MASK_SPARSITY = 0.9
CHANNEL_FRACTION = 0.5
DDP_RESULT_ENV = "LIT_PRUNE_GPU_CHECK_DDP_RESULT"
DDP_ACCELERATOR_ENV = "LIT_PRUNE_GPU_CHECK_DDP_ACCELERATOR"


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the full check or ``--quick``."""

    images: int
    batch_size: int
    warmup: int
    steps: int
    inference_batches: tuple[int, ...]
    vit_batch: int


FULL = Sizes(images=50_000, batch_size=128, warmup=5, steps=30, inference_batches=(1, 128), vit_batch=128)
QUICK = Sizes(images=256, batch_size=32, warmup=1, steps=2, inference_batches=(1, 32), vit_batch=4)


class Budget:
    """The wall-clock budget of the whole check; a part that would start after it is spent is skipped."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the check started."""
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds left, at least 0."""
        return max(0.0, self.seconds - self.elapsed())


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(run: Callable[[], Any], device: torch.device, warmup: int, steps: int, deadline: float) -> dict:
    """Median time of ``run`` in ms (CUDA events on a GPU), stopping early at ``deadline`` (perf_counter)."""
    for _ in range(warmup):
        run()
    _synchronize(device)
    times: list[float] = []
    for _ in range(steps):
        if times and time.perf_counter() > deadline:
            break
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        else:
            begin = time.perf_counter()
            run()
            times.append((time.perf_counter() - begin) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "timed": len(times),
        "stopped_early": len(times) < steps,
    }


def _batch(sizes: Sizes, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(sizes.batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (sizes.batch_size,), generator=generator)
    return images.to(device), labels.to(device)


def _resnet20(device: torch.device, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet20", num_classes=10).to(device)


def _train_step(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    before_step: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One SGD step (momentum, weight decay) of ``model`` on a fixed batch, as a closure."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            images.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
        ):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        if after_step is not None:
            after_step()

    return step


def _cifar_shaped_data(sizes: Sizes, seed: int = 0) -> CIFAR10DataModule:
    """``CIFAR10DataModule`` holding random uint8 images in memory, exactly as it holds the real files."""
    datamodule = CIFAR10DataModule(batch_size=sizes.batch_size, num_workers=0, val_split=0.1, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (sizes.images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (sizes.images,), generator=generator)
    datamodule.train_data = InMemoryImageDataset(images, labels)
    held_out = max(sizes.batch_size, sizes.images // 10)
    datamodule.val_data = InMemoryImageDataset(images[:held_out].clone(), labels[:held_out].clone())
    datamodule.test_data = datamodule.val_data
    return datamodule


def part_epoch(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """A Lightning epoch through the data module against a model-only loop and the data path alone."""
    import lightning as L
    from lightning.pytorch import Callback

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            _synchronize(device)
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            _synchronize(device)
            self.seconds.append(time.perf_counter() - self._start)

    datamodule = _cifar_shaped_data(sizes)
    torch.manual_seed(0)
    module = ImageClassifier("resnet20", num_classes=10)
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator=device.type,
        devices=[device.index] if device.type == "cuda" and device.index is not None else 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule)
    epoch_s = timer.seconds[-1]
    steps = len(datamodule.train_dataloader())

    loader_s = time.perf_counter()
    for images, labels in datamodule.train_dataloader():
        datamodule.transform_batch((images.to(device, non_blocking=True), labels.to(device)), train=True)
    _synchronize(device)
    data_s = time.perf_counter() - loader_s

    model = _resnet20(device)
    batches = [_batch(sizes, device, seed) for seed in range(4)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for index in range(steps + sizes.warmup):
        if index == sizes.warmup:
            _synchronize(device)
            model_start = time.perf_counter()
        images, labels = batches[index % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    _synchronize(device)
    model_s = time.perf_counter() - model_start
    return {
        "images": sizes.images,
        "train_images": len(datamodule.train_data),
        "batch_size": sizes.batch_size,
        "steps": steps,
        "lightning_epoch_s": epoch_s,
        "model_only_s": model_s,
        "data_path_only_s": data_s,
        "images_per_s": len(datamodule.train_data) / epoch_s,
        "share_added_by_data_and_loop": (epoch_s - model_s) / epoch_s,
        "note": "the second of two epochs (the first warms up); model-only: the same steps on batches already on "
        "the device; data path only: the loader plus transform_batch (crop, flip, normalise) on the device",
    }


def part_precision(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """A training step in float32 against bf16 autocast."""
    images, labels = _batch(sizes, device)
    fp32 = _median_ms(_train_step(_resnet20(device), images, labels), device, sizes.warmup, sizes.steps, deadline)
    bf16_step = _train_step(_resnet20(device), images, labels, autocast_dtype=torch.bfloat16)
    bf16 = _median_ms(bf16_step, device, sizes.warmup, sizes.steps, deadline)
    return {
        "batch_size": sizes.batch_size,
        "fp32_step": fp32,
        "bf16_mixed_step": bf16,
        "bf16_speedup": fp32["median_ms"] / bf16["median_ms"],
    }


def part_layout_compile(sizes: Sizes, device: torch.device, deadline: float, backend: str) -> dict:
    """A training step eager, channels-last, compiled and both; the compile time apart."""
    results: dict[str, Any] = {"batch_size": sizes.batch_size, "compile_backend": backend}
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16)
    images, labels = _batch(sizes, device)
    for name, channels_last, compiled in (
        ("eager", False, False),
        ("channels_last", True, False),
        ("compiled", False, True),
        ("compiled_channels_last", True, True),
    ):
        if time.perf_counter() > deadline:
            results[name] = {"status": "skipped", "reason": "time budget of this part spent"}
            continue
        model = _resnet20(device)
        inputs = images
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            inputs = images.contiguous(memory_format=torch.channels_last)
        runner = torch.compile(model, backend=backend) if compiled else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def step(runner: nn.Module = runner, optimizer: torch.optim.Optimizer = optimizer, inputs: Tensor = inputs):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(runner(inputs), labels).backward()
            optimizer.step()

        first = time.perf_counter()
        step()
        _synchronize(device)
        first_s = time.perf_counter() - first
        results[name] = {"first_step_s": first_s, **_median_ms(step, device, sizes.warmup, sizes.steps, deadline)}
    eager = results["eager"].get("median_ms")
    for name in ("channels_last", "compiled", "compiled_channels_last"):
        if eager and "median_ms" in results[name]:
            results[name]["speedup_vs_eager"] = eager / results[name]["median_ms"]
    return results


def part_masks(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """A training step dense, with lit-prune's masks at 90 % and with torch.nn.utils.prune at 90 %."""
    images, labels = _batch(sizes, device)
    dense = _resnet20(device)
    ours = _resnet20(device)
    mask = global_prune_mask(magnitude_scores(prunable_parameters(ours)), MASK_SPARSITY)
    mask.apply_(ours)
    enforcer = MaskEnforcer(ours, mask)
    hooked = _resnet20(device)
    targets = [(module, "weight") for module in hooked.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=MASK_SPARSITY)
    steps = {
        "dense": _train_step(dense, images, labels),
        "lit_prune_masks": _train_step(ours, images, labels, enforcer.zero_gradients_, enforcer.zero_weights_),
        "torch_nn_utils_prune": _train_step(hooked, images, labels),
    }
    results: dict[str, Any] = {"batch_size": sizes.batch_size, "sparsity": MASK_SPARSITY}
    for name, step in steps.items():
        results[name] = _median_ms(step, device, sizes.warmup, sizes.steps, deadline)
    for name in ("lit_prune_masks", "torch_nn_utils_prune"):
        results[name]["ratio_to_dense"] = results[name]["median_ms"] / results["dense"]["median_ms"]
    results["masked_weights_still_zero"] = all(
        bool((param[~mask[name].to(device)] == 0).all()) for name, param in ours.named_parameters() if name in mask
    )
    return results


def halve_channels(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with half of every channel group (lowest L1 norm, residual streams too) removed."""
    pruned = copy.deepcopy(model)
    groups = prunable_groups(pruned, include_residual=True, kinds=["channels"])
    shrink_groups_(
        pruned, select_channels(structured_importance(pruned, groups, "l1"), CHANNEL_FRACTION, scope="layer")
    )
    return pruned


def part_structured_inference(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """Inference latency dense against 50 % of the channels removed, at batch 1 and the large batch."""
    dense = _resnet20(device).eval()
    pruned = halve_channels(dense).eval()
    results: dict[str, Any] = {"channel_fraction_removed": CHANNEL_FRACTION}
    for batch in sizes.inference_batches:
        inputs = torch.randn(batch, 3, 32, 32, device=device)
        row: dict[str, Any] = {}
        for name, model in (("dense", dense), ("pruned", pruned)):
            row[f"{name}_ms"] = measure_latency(
                model, inputs, warmup=sizes.warmup, repeats=max(sizes.steps, 3)
            ).median_ms
        row["speedup"] = row["dense_ms"] / row["pruned_ms"]
        results[f"batch_{batch}"] = row
    results["params_dense"] = sum(param.numel() for param in dense.parameters())
    results["params_pruned"] = sum(param.numel() for param in pruned.parameters())
    return results


def part_semi_structured(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """ViT-Tiny with 2:4 MLP masks: dense float16 against 2:4 semi-structured, whole model and one MLP block."""
    torch.manual_seed(0)
    network = create_model("vit_tiny", num_classes=10).to(device)
    params = {name: p for name, p in network.named_parameters() if ".mlp.fc" in name and name.endswith(".weight")}
    mask = dict(nm_prune_mask(magnitude_scores(params), SEMI_STRUCTURED_PATTERN.sparsity, SEMI_STRUCTURED_PATTERN))
    plan = semi_structured_plan(network, mask, torch.float16)
    reason = semi_structured_unsupported(device)
    if reason is not None:
        return {
            "status": "skipped",
            "reason": reason,
            "plan": {"eligible": len(plan.eligible), "backend": plan.backend},
        }
    sparse_model, plan = to_semi_structured(network, mask, torch.float16)
    dense_model = masked_copy(network, mask, torch.float16)
    inputs = torch.randn(sizes.vit_batch, 3, 32, 32, device=device, dtype=torch.float16)
    repeats = max(sizes.steps, 3)
    dense_ms = measure_latency(dense_model, inputs, warmup=sizes.warmup, repeats=repeats).median_ms
    sparse_ms = measure_latency(sparse_model, inputs, warmup=sizes.warmup, repeats=repeats).median_ms
    with torch.inference_mode():
        difference = float((dense_model(inputs) - sparse_model(inputs)).abs().max())
    tokens = torch.randn(sizes.vit_batch * 65, 192, device=device, dtype=torch.float16)
    block_ms = {
        name: measure_latency(model.blocks[0].mlp, tokens, warmup=sizes.warmup, repeats=repeats).median_ms
        for name, model in (("dense", dense_model), ("semi_structured", sparse_model))
    }
    return {
        "batch_size": sizes.vit_batch,
        "dtype": "float16",
        "backend": plan.backend,
        "converted_layers": len(plan.eligible),
        "model_dense_ms": dense_ms,
        "model_semi_structured_ms": sparse_ms,
        "model_speedup": dense_ms / sparse_ms,
        "mlp_block_rows": tokens.shape[0],
        "mlp_block_dense_ms": block_ms["dense"],
        "mlp_block_semi_structured_ms": block_ms["semi_structured"],
        "mlp_block_speedup": block_ms["dense"] / block_ms["semi_structured"],
        "max_abs_logit_difference": difference,
    }


def part_energy(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """One energy reading through lit-prune's profiling code (NVML on a GPU, RAPL on a CPU when readable)."""
    model = _resnet20(device).eval()
    inputs = torch.randn(sizes.batch_size, 3, 32, 32, device=device)
    result = measure_energy(model, inputs, repeats=max(sizes.steps, 10))
    if result.energy_mj is None:
        return {"status": "skipped", "reason": result.note}
    return {"batch_size": sizes.batch_size, **result.to_dict()}


def part_ddp(sizes: Sizes, device: torch.device, deadline: float) -> dict:
    """A two-process DDP fit of a few steps with lit-prune's module and data module (two GPUs only)."""
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count < 2:
        return {"status": "skipped", "reason": f"needs two CUDA GPUs, found {count}"}
    result_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"lit_prune_gpu_check_ddp_{os.getpid()}.json"
    environment = {**os.environ, DDP_RESULT_ENV: str(result_file)}
    timeout = max(30.0, min(180.0, deadline - time.perf_counter()))
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--ddp-smoke"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.perf_counter() - start
    ranks = [result_file.with_name(f"{result_file.name}.rank{rank}") for rank in range(2)]
    if completed.returncode != 0 or not all(path.exists() for path in ranks):
        tail = (completed.stdout + completed.stderr).strip().splitlines()[-5:]
        return {"status": "failed", "reason": f"exit status {completed.returncode}: " + " | ".join(tail)}
    outcomes = [json.loads(path.read_text()) for path in ranks]
    for path in ranks:
        path.unlink()
    return {
        "wall_s": seconds,
        **outcomes[0],
        "masks_identical_on_ranks": outcomes[0]["mask_sha256"] == outcomes[1]["mask_sha256"],
    }


def ddp_smoke() -> None:
    """The DDP part's child: Lightning relaunches this same command for rank 1.

    ``LIT_PRUNE_GPU_CHECK_DDP_ACCELERATOR=cpu python benchmarks/gpu_check.py --ddp-smoke`` runs it on
    a CPU (gloo), to check the smoke run itself without GPUs.
    """
    import lightning as L

    from callbacks import MagnitudePruning

    torch.manual_seed(0)
    module = ImageClassifier("resnet20", num_classes=10)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator=os.environ.get(DDP_ACCELERATOR_ENV, "cuda"),
        devices=2,
        strategy="ddp",
        limit_train_batches=8,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[MagnitudePruning(target_sparsity=0.5, start_epoch=0)],
    )
    trainer.fit(module, _cifar_shaped_data(QUICK))
    digest = hashlib.sha256()
    for name in sorted(module.pruning_mask):
        digest.update(name.encode() + module.pruning_mask[name].cpu().numpy().tobytes())
    outcome = {
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
        "sparsity": module.pruning_mask.sparsity(),
        "mask_sha256": digest.hexdigest(),
    }
    result = Path(os.environ[DDP_RESULT_ENV])
    result.with_name(f"{result.name}.rank{trainer.global_rank}").write_text(json.dumps(outcome))


def _device_description(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        index = device.index or 0
        capability = torch.cuda.get_device_capability(index)
        return {
            "type": "cuda",
            "name": torch.cuda.get_device_name(index),
            "count": torch.cuda.device_count(),
            "capability": f"{capability[0]}.{capability[1]}",
            "cuda": torch.version.cuda,
        }
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def run_check(device: torch.device, sizes: Sizes, budget: Budget, compile_backend: str) -> dict[str, Any]:
    """Runs every part under the budget and returns the JSON-ready result."""
    parts: dict[str, Callable[[Sizes, torch.device, float], dict]] = {
        "epoch": part_epoch,
        "precision": part_precision,
        "layout_compile": lambda s, d, t: part_layout_compile(s, d, t, compile_backend),
        "masks": part_masks,
        "structured_inference": part_structured_inference,
        "semi_structured": part_semi_structured,
        "energy": part_energy,
        "ddp": part_ddp,
    }
    share = {"epoch": 0.25, "layout_compile": 0.3, "ddp": 0.15}
    results: dict[str, Any] = {}
    for name, part in parts.items():
        remaining = budget.remaining()
        if remaining <= 0:
            results[name] = {"status": "skipped", "reason": f"time budget of {budget.seconds:.0f} s spent"}
            print(f"gpu_check: {name:22s} skipped (time budget spent)", flush=True)
            continue
        start = time.perf_counter()
        deadline = start + min(remaining, budget.seconds * share.get(name, 0.1))
        try:
            outcome = part(sizes, device, deadline)
        except Exception as error:  # noqa: BLE001 - one failed part must not lose the others
            outcome = {
                "status": "failed",
                "reason": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc(),
            }
        outcome.setdefault("status", "ok")
        outcome["seconds"] = time.perf_counter() - start
        results[name] = outcome
        print(f"gpu_check: {name:22s} {outcome['status']:8s} {outcome['seconds']:7.1f} s", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="every part small (a smoke run, e.g. on a CPU)")
    parser.add_argument("--output", default="gpu_check.json", help="the JSON file to write")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget; later parts are skipped")
    parser.add_argument(
        "--compile-backend", default=None, help="torch.compile backend (inductor; eager with --quick on a CPU)"
    )
    parser.add_argument("--ddp-smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_smoke:
        ddp_smoke()
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} asked for, but this machine has no CUDA device", file=sys.stderr)
        return 2
    output = Path(args.output)
    if not output.parent.is_dir():
        print(f"gpu_check: the folder of --output {output} does not exist", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    backend = args.compile_backend or ("eager" if args.quick and device.type == "cpu" else "inductor")
    budget = Budget(args.budget_s)
    parts = run_check(device, sizes, budget, backend)
    result = {
        "device": _device_description(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "sizes": sizes.__dict__,
        "budget_s": args.budget_s,
        "total_s": budget.elapsed(),
        "stopped_early": any(
            part.get("status") == "skipped" and "budget" in part.get("reason", "") for part in parts.values()
        ),
        "parts": parts,
    }
    atomic_write(output, lambda path: path.write_text(json.dumps(result, indent=2) + "\n"))
    print(f"gpu_check: total {result['total_s']:.1f} s of {args.budget_s:.0f} s; wrote {output}", flush=True)
    return 1 if any(part["status"] == "failed" for part in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
