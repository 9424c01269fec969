"""``ProfilingCallback``: measures the final model and writes the run report."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from typing_extensions import override

from callbacks.base import PruningCallback
from callbacks.batches import loader_of, model_batches
from lit_prune.models import create_model, weights_source
from lit_prune.profiling import evaluate_topk
from lit_prune.report import (
    ACCURACY_KEYS,
    PROFILE_KEYS,
    accuracy_section,
    build_report,
    dataset_name,
    measure_profile,
    write_report,
)
from lit_prune.report.measurement import sparse_inference_mode
from lit_prune.report.plots import write_plots
from lit_prune.report.reduction import reduction_section
from lit_prune.report.runs import load_runs
from lit_prune.validation import check_bool, check_int

__all__ = ["ProfilingCallback"]

_TEST_METRICS = {"top1": "test/top1", "top5": "test/top5"}
_LOGGED_REDUCTION = (
    "removed_fraction",
    "zeroed_fraction",
    "overall_reduction",
    "theoretical_speedup",
    "measured_speedup",
)


class ProfilingCallback(Callback):
    """Profiles the final model after ``fit`` and ``test`` and writes ``report.json``/``report.md``.

    After fitting (``on_fit_end``) it evaluates top-1/top-5 of the final model on the test set
    and on the training set (without augmentation; ``train_accuracy: false`` skips it), drawing
    batches from the data module's loaders and passing them through its ``transform_batch``. After
    testing (``on_test_end``) it takes the test accuracy the module logged (``test/top1``,
    ``test/top5``) instead, and still evaluates the training set. Then it measures the profile
    (``lit_prune.report.measure_profile``: latency, memory, energy, MACs, serialised size, and
    optionally sparse inference) on one batch of ``batch_size`` test images, and the parameter
    reduction against the unpruned architecture (``lit_prune.report.reduction``: the network
    rebuilt at full width from the registry, its parameters, MACs, size and latency on the same
    batch). It logs the numbers as ``profile/*`` to the trainer's loggers, and writes
    ``report.json``, ``report.md`` and the run's plots into the run directory
    (``lightning_logs/<name>/version_<n>/``). The method is the ``describe_method()`` of every
    ``PruningCallback`` of the trainer that describes one, joined with ``" + "`` (``"dense"``
    when the model was never pruned). The report records the start weights
    (``lit_prune.models.weights_source``: published pretrained weights, a checkpoint, or random
    initialisation), and with published weights the published accuracy beside the measured one.

    Under DDP everything happens on global rank 0 only (evaluation on the whole, unsharded test
    set), with no collective call, and only rank 0 writes files.

    Args:
        batch_size: Images per batch for latency, memory and energy (fewer when the test set is
            smaller); the data module's ``batch_size`` when None.
        latency_warmup: Untimed batches before the latency is measured.
        latency_repeats: Timed batches; the reported latency is their median.
        energy_repeats: Batches inside the energy measurement window.
        train_accuracy: Evaluate top-1/top-5 on the training set too (a pass over it, or over
            ``max_eval_batches`` batches of it).
        sparse_inference: Also measure latency, memory and energy of a sparse copy of the model:
            ``true`` or ``csr`` the sparse-weight copy of a masked model with CSR linear weights
            (``lit_prune.pruning.sparse_export.to_sparse_inference``), ``coo`` the same with COO
            linear weights, ``semi_structured`` the 2:4-sparse linear layers on a CUDA GPU's sparse
            tensor cores in float16 against the dense network in float16
            (``lit_prune.pruning.semi_structured``; on a CPU the report's note says "needs CUDA"
            and gives no figure); ``false`` measures none.
        onnxruntime: Also export the final network to ONNX and measure onnxruntime's latency on
            the same batch (``profile.onnxruntime_latency_ms``, details under ``profile.onnxruntime``;
            ``lit_prune.export``); a network that cannot be exported gets ``null`` with the reason.
        max_eval_batches: Batches evaluated per split; ``None`` uses the trainer's integer
            ``limit_test_batches`` or, if that is a fraction, every batch.
        device: Device to profile on, e.g. ``"cpu"`` to measure CPU inference after GPU
            training; ``None`` profiles on the device the trainer ran on. Accuracy is always
            evaluated on the trainer's device.

    Raises:
        ValueError: If a count is out of range.
        TypeError: If ``device`` is not a device name.
    """

    def __init__(
        self,
        batch_size: int | None = None,
        latency_warmup: int = 3,
        latency_repeats: int = 10,
        energy_repeats: int = 10,
        train_accuracy: bool = True,
        sparse_inference: bool | str = False,
        onnxruntime: bool = False,
        max_eval_batches: int | None = None,
        device: str | None = None,
    ) -> None:
        check_int(batch_size, "batch_size", 1, optional=True)
        check_int(latency_warmup, "latency_warmup", 0)
        check_int(latency_repeats, "latency_repeats", 1)
        check_int(energy_repeats, "energy_repeats", 1)
        check_int(max_eval_batches, "max_eval_batches", 1, optional=True)
        check_bool(train_accuracy, "train_accuracy")
        sparse_inference_mode(sparse_inference)
        check_bool(onnxruntime, "onnxruntime")
        if device is not None:
            try:
                torch.device(device)
            except (RuntimeError, TypeError):
                raise TypeError(
                    f"device must be a torch device name such as 'cpu' or 'cuda:0', or null; got {device!r}"
                ) from None
        self.batch_size = batch_size
        self.latency_warmup = latency_warmup
        self.latency_repeats = latency_repeats
        self.energy_repeats = energy_repeats
        self.train_accuracy = train_accuracy
        self.sparse_inference = sparse_inference
        self.onnxruntime = onnxruntime
        self.max_eval_batches = max_eval_batches
        self.device = device

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.write_run_report(trainer, pl_module, trigger="fit", test_metrics=None)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            metrics = {
                k: float(trainer.callback_metrics[key])
                for k, key in _TEST_METRICS.items()
                if key in trainer.callback_metrics
            }
            self.write_run_report(trainer, pl_module, trigger="test", test_metrics=metrics or None)

    def write_run_report(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        trigger: str,
        test_metrics: Mapping[str, float] | None,
    ) -> dict[str, Any]:
        """Evaluates, profiles, logs ``profile/*`` and writes the report (call on rank 0 only).

        Args:
            trainer: The trainer that ran.
            pl_module: The module; its ``network``, ``pruning_mask`` and ``pruning_stages`` are
                used when present (``ImageClassifier`` has them), otherwise the module itself.
            trigger: ``"fit"`` or ``"test"``: what just ended.
            test_metrics: Test accuracy from the test loop (``{"top1": ...}``), or ``None`` to
                evaluate it here.

        Returns:
            The report that was written.
        """
        run_dir = _run_dir(trainer)
        network: nn.Module = getattr(pl_module, "network", pl_module)
        mask = getattr(pl_module, "pruning_mask", None)
        datamodule = trainer.datamodule
        eval_device = trainer.strategy.root_device
        profile_device = torch.device(self.device) if self.device is not None else eval_device
        limit = self._eval_limit(trainer)

        if test_metrics is not None:
            samples = None
            test, test_note = dict(test_metrics), ""
            test_source = "the test loop (test/top1, test/top5 logged by the module)"
        else:
            test, samples, test_note = self._evaluate(trainer, network, "test", eval_device, limit)
            test_source = f"evaluating the final model on the test set after fit ({limit or 'all'} batches)"
        train, train_samples, train_note = (None, None, "not measured (set train_accuracy: true to measure it)")
        if self.train_accuracy:
            train, train_samples, train_note = self._evaluate(trainer, network, "train", eval_device, limit)
            if train is not None:
                batches = limit or "all"
                test_source += f"; train: the final model on the training split, not augmented ({batches} batches)"
        accuracy = accuracy_section(test, train, test_note, train_note, samples, train_samples, test_source)

        inputs = self._example_inputs(trainer, profile_device)
        profiled = _on_device(network, profile_device)
        profile = measure_profile(
            profiled,
            inputs,
            mask,
            warmup=self.latency_warmup,
            repeats=self.latency_repeats,
            energy_repeats=self.energy_repeats,
            sparse_inference=self.sparse_inference,
            onnxruntime=self.onnxruntime,
        )
        hparams = getattr(pl_module, "hparams", {})
        model_name = hparams.get("network") if isinstance(hparams.get("network"), str) else type(network).__name__
        surgery = bool(getattr(pl_module, "surgery_history", None))
        reference, description, note = _unpruned_reference(pl_module, network, surgery, profile_device)
        reduction = reduction_section(
            profiled,
            reference,
            inputs,
            profile,
            reference_description=description,
            reference_note=note,
            latency_warmup=self.latency_warmup,
            latency_repeats=self.latency_repeats,
        )
        report = build_report(
            model=model_name,
            dataset=dataset_name(datamodule),
            method=_describe_method(trainer, pl_module),
            network=network,
            mask=mask,
            accuracy=accuracy,
            profile=profile,
            stages=getattr(pl_module, "pruning_stages", []),
            reduction=reduction,
            weights=_start_weights(trainer, network, trigger),
            surgery=surgery,
            extra={
                "run_dir": run_dir,
                "trigger": trigger,
                **_trained_until(trainer, pl_module),
                "checkpoint": trainer.ckpt_path,
                "validated_on_test": bool(getattr(datamodule, "validates_on_test", False)),
                **_callback_sections(trainer),
            },
        )
        self._log(trainer, report)
        json_path, markdown_path = write_report(report, run_dir)
        rank_zero_info(f"ProfilingCallback: wrote {json_path} and {markdown_path}")
        _write_run_plots(trainer, run_dir)
        return report

    def _eval_limit(self, trainer: Trainer) -> int | None:
        if self.max_eval_batches is not None:
            return self.max_eval_batches
        limit = trainer.limit_test_batches
        return limit if isinstance(limit, int) else None

    def _evaluate(
        self, trainer: Trainer, network: nn.Module, split: str, device: torch.device, limit: int | None
    ) -> tuple[dict[str, float | None] | None, int | None, str]:
        """Top-k accuracy on one split, or ``None`` with the reason."""
        try:
            loader = loader_of(trainer, split)
        except (RuntimeError, NotImplementedError) as error:
            return None, None, f"not measured: the data module has no {split} split to evaluate ({error})"
        if loader is None:
            return None, None, f"not measured: the trainer has no data module with a {split}_dataloader()"
        counter = _SampleCounter(model_batches(trainer, loader, device, limit=limit))
        topk = evaluate_topk(_on_device(network, device), counter, topk=(1, 5), device=device)
        return topk, counter.count, ""

    def _example_inputs(self, trainer: Trainer, device: torch.device) -> Tensor:
        """One batch of ``batch_size`` model inputs, from the test (else validation, else training) data."""
        batch_size = self.batch_size or getattr(trainer.datamodule, "batch_size", None) or 128
        for split in ("test", "val", "train"):
            loader = loader_of(trainer, split)
            if loader is None:
                continue
            parts, count = [], 0
            for images, _ in model_batches(trainer, loader, device):
                parts.append(images)
                count += images.shape[0]
                if count >= batch_size:
                    break
            if parts:
                return torch.cat(parts)[:batch_size]
        raise RuntimeError(
            "ProfilingCallback needs data to profile with: give the Trainer a datamodule with a "
            "test_dataloader() (or val/train dataloaders)"
        )

    def _log(self, trainer: Trainer, report: Mapping[str, Any]) -> None:
        """Logs the measured numbers as ``profile/<key>`` (values that are ``None`` are left out)."""
        profile, accuracy = report["profile"], report["accuracy"]
        values = {f"profile/{key}": profile[key] for key in PROFILE_KEYS}
        values.update({f"profile/{key}": accuracy[key] for key in ACCURACY_KEYS})
        values.update({f"profile/{key}": report["reduction"][key] for key in _LOGGED_REDUCTION})
        values["profile/sparsity"] = report["sparsity"]["global"]
        values["profile/params_total"] = report["params"]["total"]
        values["profile/params_nonzero"] = report["params"]["nonzero"]
        sparse = profile.get("sparse_inference") or {}
        values["profile/sparse_inference_latency_ms"] = sparse.get("latency_ms")
        values["profile/onnxruntime_latency_ms"] = profile.get("onnxruntime_latency_ms")
        metrics = {key: float(value) for key, value in values.items() if value is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)


class _SampleCounter:
    """Wraps a batch iterable and counts the samples that went through it."""

    def __init__(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        self.batches = batches
        self.count = 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.batches:
            self.count += int(batch[1].shape[0])
            yield batch


def _write_run_plots(trainer: Trainer, run_dir: str) -> None:
    """Writes this run's accuracy/loss-vs-epoch and accuracy-vs-reduction plots into its directory."""
    for logger in trainer.loggers:
        logger.save()
        flush = getattr(getattr(logger, "experiment", None), "flush", None)
        if callable(flush):
            flush()
    for path in write_plots(load_runs([run_dir]), run_dir):
        rank_zero_info(f"ProfilingCallback: wrote {path}")


def _unpruned_reference(
    pl_module: LightningModule, network: nn.Module, surgery: bool, device: torch.device
) -> tuple[nn.Module | None, str, str]:
    """The unpruned architecture of the run's network, its description, and why there is none.

    A registry network is rebuilt at full width from the module's hyperparameters (architecture
    options only: no download, no checkpoint), under a forked RNG so the run's random state is
    untouched. A network given as a module has no recipe to rebuild; without surgery its own
    shapes are the unpruned ones.
    """
    hparams = getattr(pl_module, "hparams", {})
    name = hparams.get("network")
    if isinstance(name, str):
        num_classes = hparams.get("num_classes", 10)
        options = dict(hparams.get("network_kwargs") or {})
        try:
            with torch.random.fork_rng(devices=[]):
                reference = create_model(name, num_classes=num_classes, **options)
        except Exception as error:  # noqa: BLE001 - the report is still written, with the reason
            return None, "", f"the unpruned {name} could not be built: {type(error).__name__}: {error}"
        described = ", ".join(f"{key}={value}" for key, value in options.items())
        return (
            reference.to(device),
            f"{name} with {num_classes} classes{f' ({described})' if described else ''}, built afresh from the "
            "model registry",
            "",
        )
    if not surgery:
        return _on_device(network, device), f"the final {type(network).__name__} itself (no surgery ran)", ""
    return (
        None,
        "",
        (
            f"the {type(network).__name__} was given as a module, not a registry name, and was shrunk by surgery: "
            "its unpruned architecture cannot be rebuilt"
        ),
    )


def _start_weights(trainer: Trainer, network: nn.Module, trigger: str) -> dict[str, Any]:
    """The weights the report's numbers come from: a tested checkpoint, or what the run started from."""
    if trigger == "test" and trainer.ckpt_path:
        return {
            "kind": "checkpoint",
            "description": f"checkpoint {trainer.ckpt_path} (tested)",
            "path": str(trainer.ckpt_path),
        }
    return weights_source(network)


def _run_dir(trainer: Trainer) -> str:
    """``trainer.log_dir`` as global rank 0 sees it, without the broadcast ``Trainer.log_dir`` does.

    ``Trainer.log_dir`` is a collective call, which must not run in rank-zero-only code.
    """
    if trainer.loggers:
        logger = trainer.loggers[0]
        directory = logger.log_dir if isinstance(logger, (TensorBoardLogger, CSVLogger)) else logger.save_dir
        if directory is not None:
            return str(directory)
    return str(trainer.default_root_dir)


def _on_device(network: nn.Module, device: torch.device) -> nn.Module:
    """The network itself when it is on ``device``, else a copy there (the original is not moved)."""
    for tensor in network.parameters():
        current = tensor.device
        break
    else:
        return network
    if current == device or (current.type == device.type and device.index is None):
        return network
    return copy.deepcopy(network).to(device)


def _callback_sections(trainer: Trainer) -> dict[str, Any]:
    """The report sections the trainer's other callbacks add (their ``report_sections()``, e.g. ``robustness``).

    A callback that measures something for the report does so in an earlier hook on every rank
    (``on_train_end``, ``on_test_epoch_end``) and returns the result here, so the order of the
    callbacks does not matter.
    """
    sections: dict[str, Any] = {}
    for callback in trainer.callbacks:
        report_sections = getattr(callback, "report_sections", None)
        if callable(report_sections):
            sections.update(report_sections())
    return sections


def _describe_method(trainer: Trainer, pl_module: LightningModule) -> str:
    """Joins the ``describe_method()`` of the trainer's pruning callbacks, else the methods the stages recorded.

    A checkpoint tested without its pruning callbacks (E9's robustness evaluation) is described by the
    methods its stages were recorded with; ``"dense"`` when nothing was pruned.
    """
    described = (callback.describe_method() for callback in trainer.callbacks if isinstance(callback, PruningCallback))
    descriptions = [description for description in described if description is not None]
    if descriptions:
        return " + ".join(descriptions)
    stages = getattr(pl_module, "pruning_stages", None) or []
    recorded = list(dict.fromkeys(stage["method"] for stage in stages if stage.get("method")))
    if recorded:
        return " + ".join(recorded)
    if getattr(pl_module, "pruning_mask", None) is None and not stages:
        return "dense"
    return "pruned (no pruning callback in this run describes the method)"


def _trained_until(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The epoch and step the profiled weights were trained to: the fit's, or the loaded checkpoint's."""
    loaded = getattr(pl_module, "loaded_checkpoint", None)
    if trainer.state.fn != "fit" and loaded:
        return {"epoch": loaded.get("epoch"), "global_step": loaded.get("global_step")}
    last_epoch = (
        trainer.current_epoch - 1 if trainer.state.fn == "fit" and trainer.current_epoch else trainer.current_epoch
    )
    return {"epoch": last_epoch, "global_step": trainer.global_step}
