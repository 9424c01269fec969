"""``ImageClassifier``: the LightningModule around an image-classification network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lit_prune.console import announce
from lit_prune.errors import UserError
from lit_prune.models import create_model
from lit_prune.pruning import MaskEnforcer, PruningMask
from lit_prune.pruning.channel_surgery import shrink_groups_
from lit_prune.pruning.parameters import parameter_count
from lit_prune.pruning.surgery_history import check_history, remap_mask, replay_history
from lit_prune.robustness import AdversarialTraining, normalization_of
from lit_prune.validation import check_bool

__all__ = ["ImageClassifier"]

_STAGES = ("train", "val", "test")


_WEIGHT_SOURCES = ("checkpoint_path", "pretrained")

_COMPILE_OPTIONS = ("fullgraph", "dynamic", "backend", "mode", "options", "disable")
"""The keyword arguments of ``torch.compile`` that ``compile:`` may give (besides the model)."""


def _compile_options(compile: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments from the ``compile`` option; None means eager.

    Raises:
        UserError: If the option is neither a bool nor a mapping of ``torch.compile`` arguments.
    """
    if isinstance(compile, bool):
        return {} if compile else None
    if not isinstance(compile, Mapping):
        raise UserError(
            f"compile must be true, false or a mapping of torch.compile arguments ({', '.join(_COMPILE_OPTIONS)}), "
            f"got {compile!r}"
        )
    unknown = sorted(set(compile) - set(_COMPILE_OPTIONS))
    if unknown:
        raise UserError(
            f"compile got unknown torch.compile arguments {unknown}; allowed: {', '.join(_COMPILE_OPTIONS)} "
            "(e.g. compile: {mode: max-autotune, dynamic: false})"
        )
    return dict(compile)


def _architecture_kwargs(network_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The kwargs that shape the network, without where its initial weights came from.

    A checkpoint of this module holds its own weights, so ``load_from_checkpoint`` must not need
    the file (or the download) the run started from.
    """
    return {k: v for k, v in (network_kwargs or {}).items() if k not in _WEIGHT_SOURCES}


class ImageClassifier(LightningModule):
    """Trains and evaluates an image classifier with cross-entropy and top-1/top-5 accuracy.

    The network is built from the model registry by name (``network: resnet20``) or given as any
    ``torch.nn.Module`` (in YAML through ``class_path``, e.g. a timm or torchvision model). The
    optimizer and learning-rate scheduler are callables that LightningCLI builds from YAML
    (``class_path: torch.optim.SGD`` with ``init_args``).

    Logged metrics: ``train/loss``, ``train/top1``, ``train/top5``, and the same under ``val/`` and
    ``test/`` (top-5 only when there are at least five classes).

    The module owns the pruning state that defines the model: the mask (parameter name of the
    network to bool tensor, plain names such as ``layer1.0.conv1.weight``), the history of
    structured surgery (channels, heads, MLP units physically removed) and the stages that pruning
    callbacks record. All are written to ``checkpoint["pruning"]`` and restored before the weights
    load (the surgery is replayed on the freshly built network first), so ``fit --ckpt_path``
    (resume), ``test --ckpt_path`` and ``load_from_checkpoint`` all see the pruned model with
    strict loading. A pruned weight stays exactly zero: its gradient is zeroed before
    every optimizer step (after AMP unscaling) and the weight re-zeroed after it.

    With ``compile`` the forward pass of training, validation, testing and prediction runs through
    ``torch.compile(network)``; :attr:`network` itself stays the plain module, so state dicts,
    masks, surgery and reports see plain parameter names (no ``_orig_mod.``) and a checkpoint of
    a compiled run loads into an uncompiled module and back. The compiled wrapper takes the
    parameters as graph inputs, so weights zeroed in place by the mask are seen by the next call;
    after structured surgery the network is compiled again. With ``channels_last`` the network's
    4-d weights and every 4-d input batch use ``torch.channels_last`` (NHWC) memory, again after
    surgery.

    Args:
        network: A registered model name (see ``lit_prune.models.list_models``) or a module.
        num_classes: Number of classes; linked from the data module by the CLI.
        network_kwargs: Extra keyword arguments for ``create_model`` when ``network`` is a name.
        label_smoothing: Label smoothing of the cross-entropy loss, in [0, 1).
        optimizer: Callable that builds the optimizer from the parameters.
        lr_scheduler: Callable that builds the LR scheduler from the optimizer, or None.
        lr_scheduler_interval: ``"epoch"`` or ``"step"``: how often the scheduler steps.
        compile: ``true`` to run the network through ``torch.compile`` with its defaults (inductor),
            or a mapping of its arguments (``mode``, ``backend``, ``dynamic``, ``fullgraph``,
            ``options``, ``disable``). Off by default: on a CPU, compiling ResNet-20 takes one to
            two minutes for the training graph and 15-30 s for each evaluation graph, for a
            1.1-1.6x faster step (``benchmarks/README.md``, "torch.compile and channels-last").
        channels_last: Train and evaluate in the channels-last memory format (off by default:
            faster for most CPU training steps, not reliably for inference; see the same section).
        adversarial_training: Train on adversarial examples made in pixel space
            (``lit_prune.robustness.training``): ``{method: pgd}`` (Madry et al. 2018) or
            ``{method: fgsm_rs}`` (Wong et al. 2020), with ``epsilon`` (``8/255``), ``step_size``,
            ``steps``, ``start_epoch``, and for validation ``val_steps`` and ``val_batches``: the
            first ``val_batches`` validation batches of every epoch are also attacked with PGD and
            logged as ``val/pgd_top1`` beside the clean ``val/top1``; ``train/top1`` is then the
            accuracy on the adversarial training batches. None (default) trains naturally.

    Raises:
        ValueError: If an argument is out of range.
    """

    def __init__(
        self,
        network: str | nn.Module = "resnet20",
        num_classes: int = 10,
        network_kwargs: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: str = "epoch",
        compile: bool | dict[str, Any] = False,
        channels_last: bool = False,
        adversarial_training: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        compile_options = _compile_options(compile)
        check_bool(channels_last, "channels_last")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}")
        if isinstance(network, str):
            self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
            self.network = create_model(network, num_classes=num_classes, **(network_kwargs or {}))
            self.hparams["network_kwargs"] = _architecture_kwargs(network_kwargs)
        elif isinstance(network, nn.Module):
            if network_kwargs:
                raise ValueError("network_kwargs only applies when network is a registered model name")
            self.save_hyperparameters(ignore=["network", "optimizer", "lr_scheduler"])
            self.network = network
        else:
            raise TypeError(f"network must be a registered model name or an nn.Module, got {type(network).__name__}")
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.compile_options = compile_options
        self.channels_last = channels_last
        self._compiled_network: nn.Module | None = None
        self._apply_memory_format()
        self.adversarial_training = AdversarialTraining.from_options(adversarial_training)
        self._pixel_normalization: tuple[Tensor, Tensor] | None = None
        self.topk = (1, 5) if num_classes >= 5 else (1,)
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_top{k}": MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro")
                for stage in _STAGES
                for k in self.topk
            }
        )
        if self.adversarial_training is not None:
            self.metrics["val_pgd_top1"] = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.pruning_mask: PruningMask | None = None
        self.pruning_stages: list[dict[str, Any]] = []
        self.surgery_history: list[dict[str, Any]] = []
        self._mask_enforcer: MaskEnforcer | None = None
        self._announced_state: tuple[float, int] | None = None
        self.loaded_checkpoint: dict[str, Any] | None = None

    def forward(self, images: Tensor) -> Tensor:
        """Returns the logits of the network for a batch of images (compiled and channels-last if asked)."""
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self._forward_network()(images)

    def _forward_network(self) -> nn.Module:
        """The network to call: :attr:`network`, or its compiled wrapper, built on first use.

        The wrapper is kept out of the module's registered children (``object.__setattr__``), so it
        adds no ``_orig_mod.`` keys to state dicts, and it is rebuilt when :attr:`network` was replaced.
        """
        if self.compile_options is None:
            return self.network
        compiled = self._compiled_network
        if compiled is None or getattr(compiled, "_orig_mod", None) is not self.network:
            compiled = torch.compile(self.network, **self.compile_options)
            object.__setattr__(self, "_compiled_network", compiled)
        return compiled

    def _network_changed(self) -> None:
        """After surgery: the new 4-d weights get the memory format, and the network is compiled again."""
        self._apply_memory_format()
        object.__setattr__(self, "_compiled_network", None)

    def _apply_memory_format(self) -> None:
        if self.channels_last:
            self.network.to(memory_format=torch.channels_last)

    def __getstate__(self) -> dict[str, Any]:
        """Pickling and ``copy.deepcopy`` leave the compiled wrapper out; it is rebuilt on first use."""
        state = super().__getstate__()
        state["_compiled_network"] = None
        return state

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=not on_step)
        for k in self.topk:
            metric = self.metrics[f"{stage}_top{k}"]
            metric.update(logits.detach(), labels)
            self.log(f"{stage}/top{k}", metric, on_step=False, on_epoch=True, prog_bar=k == 1)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        adversary = self.adversarial_training
        if adversary is not None and adversary.active(self.current_epoch):
            images, labels = batch
            mean, std = self._normalization_on(images.device)
            seed = hash((adversary.seed, self.global_step, self.global_rank)) % (2**63)
            batch = (adversary.training_batch(self.network, images, labels, mean, std, seed), labels)
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "val")
        adversary = self.adversarial_training
        if adversary is not None and batch_idx < adversary.val_batches:
            images, labels = batch
            mean, std = self._normalization_on(images.device)
            seed = hash((adversary.seed, -1, self.current_epoch, batch_idx, self.global_rank)) % (2**63)
            adversarial = adversary.validation_batch(self.network, images, labels, mean, std, seed)
            metric = self.metrics["val_pgd_top1"]
            metric.update(self(adversarial).detach(), labels)
            self.log("val/pgd_top1", metric, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def setup(self, stage: str) -> None:
        if self.adversarial_training is not None and stage in ("fit", "validate"):
            mean, std = normalization_of(self.trainer.datamodule, "adversarial_training")
            self._pixel_normalization = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))

    def _normalization_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The data's mean and std (``1 x C x 1 x 1``) on ``device``, for attacks in pixel space."""
        if self._pixel_normalization is None:
            raise RuntimeError("adversarial_training needs the data's normalisation, read in setup() from the trainer")
        mean, std = self._pixel_normalization
        if mean.device != device:
            mean, std = mean.to(device), std.to(device)
            self._pixel_normalization = (mean, std)
        return mean, std

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(images).argmax(dim=1)

    def set_pruning_mask(self, mask: PruningMask) -> None:
        """Installs a pruning mask: zeroes the pruned weights and their optimizer state.

        The new mask is intersected with the current one, so pruned weights never revive.

        Args:
            mask: Mask over parameters of ``self.network``.

        Raises:
            ValueError: If the mask does not fit the network.
        """
        if self.pruning_mask is not None:
            mask = mask.intersect(self.pruning_mask)
        mask.validate(self.network)
        mask.apply_(self.network)
        self._mask_enforcer = MaskEnforcer(self.network, mask)
        if self._trainer is not None:
            for optimizer in self.trainer.optimizers:
                self._mask_enforcer.clear_optimizer_state_(optimizer)
        self.pruning_mask = mask

    def apply_surgery(
        self, keep: Mapping[str, Sequence[int]], kinds: Sequence[str] | None = None, restart_lr_schedule: bool = False
    ) -> list[dict[str, Any]]:
        """Physically removes channels, heads or MLP units, and keeps everything consistent with it.

        The records are appended to :attr:`surgery_history` (checkpointed and replayed on load),
        an existing mask is carried through the surgery, and during ``fit`` the optimizer is
        rebuilt for the new parameters (and DDP re-wraps the shrunken module); the LR schedule
        continues where it was unless ``restart_lr_schedule``.

        Args:
            keep: Structured group name (see ``lit_prune.pruning.channel_groups.prunable_groups``)
                to the indices of the units to keep.
            kinds: Restrict to these group kinds (``channels``, ``heads``, ``mlp_units``).
            restart_lr_schedule: Start the LR schedule from its beginning after the surgery.

        Returns:
            The records of this surgery.
        """
        records = shrink_groups_(self.network, keep, kinds=kinds)
        if not records:
            return records
        self.surgery_history.extend(records)
        self._network_changed()
        if self.pruning_mask is not None:
            self.pruning_mask = remap_mask(self.pruning_mask, self.network, records)
            self.pruning_mask.apply_(self.network)
            self._mask_enforcer = MaskEnforcer(self.network, self.pruning_mask)
        if self._trainer is not None and self.trainer.training:
            self._rebuild_optimizers(restart_lr_schedule)
        return records

    def _rebuild_optimizers(self, restart_lr_schedule: bool) -> None:
        """New optimizer (and DDP wrapper) for the new parameters; the LR schedule position is kept."""
        strategy = self.trainer.strategy
        wrap = getattr(strategy, "_setup_model", None)
        if strategy.model is not self and wrap is not None:
            strategy.model = wrap(self)
        old_schedulers = [config.scheduler.state_dict() for config in strategy.lr_scheduler_configs]
        strategy.setup_optimizers(self.trainer)
        if restart_lr_schedule:
            return
        for config, state in zip(strategy.lr_scheduler_configs, old_schedulers):
            config.scheduler.load_state_dict(state)
            for group, lr in zip(config.scheduler.optimizer.param_groups, config.scheduler.get_last_lr()):
                group["lr"] = lr

    def record_stage(self, name: str, **values: Any) -> dict[str, Any]:
        """Appends a pruning stage (baseline, pruned, round, fine-tuned) for the run report.

        Args:
            name: Name of the stage, e.g. ``"pruned"`` or ``"round_2/retrained"``.
            **values: Further measurements (``val_top1``, ``val_top5``, ...); an ``action``
                entry describes what was done beyond pruning (``"weights rewound to epoch 1"``).

        Returns:
            The recorded stage, with ``epoch``, ``global_step`` and ``sparsity`` filled in.

        A stage that follows a change of the mask or of the network's shape prints one console
        line: epoch, stage, what was done, parameters left.
        """
        sparsity = 0.0 if self.pruning_mask is None else self.pruning_mask.sparsity()
        stage = {"name": name, "epoch": self.current_epoch, "global_step": self.global_step, "sparsity": sparsity}
        stage.update(values)
        self.pruning_stages.append(stage)
        self._announce_if_pruned(stage)
        return stage

    def _announce_if_pruned(self, stage: Mapping[str, Any]) -> None:
        """Prints one console line when the stage follows a change of the mask or the network's shape."""
        state = (stage["sparsity"], len(self.surgery_history))
        previous = self._announced_state or (0.0, 0)
        self._announced_state = state
        if state == previous:
            return
        done = []
        if state[0] != previous[0]:
            done.append(f"weights pruned to {state[0]:.2%} sparsity")
        records = self.surgery_history[previous[1] :]
        if records:
            units = sum(record["size"] - len(record["keep"]) for record in records)
            operations = sorted({record["op"].removeprefix("remove_") for record in records})
            done.append(f"{units:,} {'/'.join(operations)} removed physically")
        action = stage.get("action")
        if action:
            done.append(str(action))
        total, nonzero = parameter_count(self.network), parameter_count(self.network, nonzero=True)
        announce(
            f"epoch {stage['epoch']} | {stage['name']} | {', '.join(done)} "
            f"| {nonzero:,} of {total:,} parameters non-zero"
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._mask_enforcer is not None:
            self._mask_enforcer.zero_gradients_()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self._mask_enforcer is not None:
            self._mask_enforcer.zero_weights_()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        mask = None if self.pruning_mask is None else self.pruning_mask.state_dict()
        checkpoint["pruning"] = {
            "mask": mask,
            "surgery": [dict(record) for record in self.surgery_history],
            "stages": [dict(stage) for stage in self.pruning_stages],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.loaded_checkpoint = {
            "epoch": checkpoint.get("epoch"),
            "global_step": checkpoint.get("global_step"),
            "adversarial_training": (checkpoint.get("hyper_parameters") or {}).get("adversarial_training"),
        }
        state = checkpoint.get("pruning") or {}
        self.pruning_stages = [dict(stage) for stage in state.get("stages", [])]
        self._restore_surgery(check_history(state.get("surgery", [])))
        if state.get("mask") is None:
            self.pruning_mask, self._mask_enforcer = None, None
        else:
            mask = PruningMask.from_state_dict(state["mask"])
            mask.validate(self.network)
            self.pruning_mask = mask
            self._mask_enforcer = MaskEnforcer(self.network, mask)
        sparsity = 0.0 if self.pruning_mask is None else self.pruning_mask.sparsity()
        self._announced_state = (sparsity, len(self.surgery_history))

    def _restore_surgery(self, history: list[dict[str, Any]]) -> None:
        """Replays the checkpoint's surgery on the full-size network, so its weights load strictly."""
        if history == self.surgery_history:
            return
        if self.surgery_history:
            raise ValueError(
                "this module's network was already shrunk by a different surgery history than the checkpoint's; "
                "load the checkpoint into a freshly built ImageClassifier"
            )
        replay_history(self.network, history)
        self.surgery_history = history
        self._network_changed()

    def configure_optimizers(self) -> Mapping[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.lr_scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": self.lr_scheduler_interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}
