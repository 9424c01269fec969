"""Saliency scores for pruning at (or near) initialisation: SNIP, GraSP and SynFlow.

Every score function returns the shape of :mod:`lit_prune.pruning.scores`: a plain ``dict`` of
parameter name to a tensor of the parameter's shape where *higher means keep*, so any of them
feeds :func:`~lit_prune.pruning.selection.global_prune_mask`. All accept a ``current_mask``:
the network is scored with its pruned weights at zero (through a masked functional call, the
model's own tensors are never modified) and pruned positions score ``-inf``, so they stay
pruned, count towards the next target, and the next stage prunes among the survivors.

The data-dependent scores are deterministic: for the same network, batches and parameters
they give the same numbers whatever the global random state, because they run under
:func:`~lit_prune.pruning.scoring_mode.scoring_mode` (dropout and drop-path off; batch norm on
running or batch statistics as the ``bn_mode`` option says, defaulting to the authors' code:
``eval`` for SNIP, ``train`` for GraSP). Scoring leaves the model as it was: gradients are
taken with ``torch.autograd.grad`` on detached copies of the weights, so no ``.grad`` is
written; the train/eval flag of every module and every buffer (batch-norm running statistics)
are restored afterwards.

Typical use, GraSP at initialisation as in its reference code (two class-grouped halves of 10
samples per class, batch norm on batch statistics, temperature 200)::

    params = prunable_parameters(model)
    calibration = class_balanced_batches(train_loader, num_classes=10, samples_per_class=10)
    mask = global_prune_mask(grasp_scores(model, params, calibration), sparsity=0.8)
    mask.apply_(model)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lit_prune.pruning.mask import PruningMask
from lit_prune.pruning.parameters import check_model_parameters, current_keep_masks
from lit_prune.pruning.score_registry import register_score
from lit_prune.pruning.scoring_mode import check_bn_mode, scoring_mode
from lit_prune.pruning.selection import global_prune_mask, iterative_prune_mask
from lit_prune.validation import check_int, check_number

__all__ = [
    "LossFunction",
    "class_balanced_batches",
    "grasp_scores",
    "hessian_gradient_product",
    "snip_scores",
    "synflow_prune_mask",
    "synflow_scores",
]

LossFunction = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(logits, targets)`` returning the *mean* loss over the batch, e.g. ``F.cross_entropy``."""

Batch = tuple[Tensor, Tensor]


@register_score("snip", kind="weights", needs=("batches", "gradients"), label="SNIP", settings={"dropout": "off"})
def snip_scores(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Iterable[Batch],
    loss_fn: LossFunction = F.cross_entropy,
    current_mask: PruningMask | None = None,
    bn_mode: str = "eval",
) -> dict[str, Tensor]:
    """Scores each weight by its connection sensitivity ``|∂L/∂w ⊙ w|`` (SNIP).

    Lee, Ajanthan & Torr, 2019, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity" (ICLR). ``L`` is the mean loss over *all* calibration samples: each batch's
    (mean) loss is weighted by its share of the samples and the gradients of the batches are
    summed, so the scores do not depend on how the samples are split into batches (up to
    batch-norm statistics with ``bn_mode="train"``). The paper's normalisation by the sum of
    all scores is left out: it does not change the ranking.

    The network is scored in eval mode by default, as the authors' code does
    (namhoonlee/snip-public, ``prune.py``: ``is_train: False``, so batch norm uses its running
    statistics and there is no dropout) and as Synaptic-Flow's SNIP does (``prune_loop`` with
    ``train_mode=False``). Dropout and drop-path are off in either ``bn_mode``, so the scores
    do not depend on the random state. Where lit-prune's selection differs from the
    reference's (exact ``round(s·N)`` counts with a seeded tie rule instead of
    snip-public's ``top_k`` of ``round(N·(1-s))``), see
    :func:`~lit_prune.pruning.selection.global_prune_mask`.

    Args:
        model: The network; its weights, buffers, modes and gradients are left unchanged.
        params: The parameters to score (e.g. from ``prunable_parameters(model)``).
        batches: Calibration batches ``(inputs, targets)``; moved to the parameters' device.
        loss_fn: ``loss_fn(logits, targets)`` returning the batch-mean loss.
        current_mask: The mask so far; the network is scored with its pruned weights at zero,
            and pruned positions score ``-inf``.
        bn_mode: ``"eval"`` (default, the authors' code): batch norm uses its running
            statistics; ``"train"``: the statistics of each calibration batch. Dropout is off
            in both.

    Returns:
        Name to ``|g ⊙ w|`` (``-inf`` where pruned), detached, in each parameter's dtype.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``params`` is empty or not parameters of ``model``, ``batches`` is empty
            or malformed, or ``current_mask`` does not fit ``params``.
        UserError: If ``bn_mode`` is not ``"eval"`` or ``"train"``.
    """
    named = check_model_parameters(model, params)
    keep = current_keep_masks(named, current_mask)
    data = _calibration_batches(batches)
    _check_loss_fn(loss_fn)
    bn_mode = check_bn_mode(bn_mode)
    with scoring_mode(model, bn_mode):
        leaves = _leaves(named)
        gradient = _calibration_gradient(model, leaves, keep, data, loss_fn, temperature=1.0)
    return {
        name: _mark_pruned((gradient[name] * _masked(leaf, keep[name])).abs().detach(), keep[name])
        for name, leaf in leaves.items()
    }


def hessian_gradient_product(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Iterable[Batch],
    temperature: float = 200.0,
    loss_fn: LossFunction = F.cross_entropy,
    current_mask: PruningMask | None = None,
    bn_mode: str = "train",
) -> dict[str, Tensor]:
    """Computes ``Hg``, the Hessian of the calibration loss times its gradient, without a Hessian.

    The quantity behind GraSP (Wang, Zhang & Grosse, 2020, "Picking Winning Tickets Before
    Training by Preserving Gradient Flow", ICLR). With ``L(θ) = (1/N) Σ_i ℓ(f(x_i; θ) / T, y_i)``
    the mean loss over all ``N`` calibration samples at temperature ``T``:

    1. ``g = ∇L`` is accumulated over every batch first (each batch's mean loss weighted by its
       share of the samples, gradients summed), then held constant;
    2. ``Hg = ∇(g · ∇L)`` is accumulated over the same batches by differentiating the scalar
       ``g · ∇L_b`` of each batch (double backward: a Hessian-vector product).

    Both sums are exact decompositions of the full-data quantities, so several batches give the
    same result as one batch holding all samples, up to batch-norm statistics with
    ``bn_mode="train"``: there each batch is normalised with its own statistics, which is why
    GraSP's reference splits its sample into two class-grouped halves
    (:func:`class_balanced_batches`). Batches are materialised in a list because they are read
    twice.

    Args:
        model: The network; its weights, buffers, modes and gradients are left unchanged.
        params: The parameters the gradient and Hessian are taken over.
        batches: Calibration batches ``(inputs, targets)``; moved to the parameters' device.
        temperature: ``T``, dividing the logits before the loss (200 in the paper's code), so
            the softmax is not saturated and the gradient does not vanish.
        loss_fn: ``loss_fn(logits, targets)`` returning the batch-mean loss.
        current_mask: The mask so far; the derivatives are those of the network with its pruned
            weights held at zero (zero at pruned positions).
        bn_mode: ``"train"`` (default, as GraSP's reference code): batch norm uses the
            statistics of each batch; ``"eval"``: its running statistics. Dropout is off in both.

    Returns:
        Name to ``Hg``, detached, in each parameter's dtype.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``temperature`` is not a positive finite number, ``params`` is empty or
            not parameters of ``model``, ``batches`` is empty or malformed, or ``current_mask``
            does not fit ``params``.
        UserError: If ``bn_mode`` is not ``"eval"`` or ``"train"``.
    """
    named = check_model_parameters(model, params)
    keep = current_keep_masks(named, current_mask)
    data = _calibration_batches(batches)
    temperature = check_number(temperature, "temperature", positive=True, meaning="200 in the GraSP paper")
    _check_loss_fn(loss_fn)
    bn_mode = check_bn_mode(bn_mode)
    with scoring_mode(model, bn_mode):
        leaves = _leaves(named)
        return _hessian_gradient_product(model, leaves, keep, data, loss_fn, temperature)


@register_score(
    "grasp",
    kind="weights",
    needs=("batches", "gradients"),
    label="GraSP",
    calibration_splits=2,
    settings={"dropout": "off"},
)
def grasp_scores(
    model: nn.Module,
    params: Mapping[str, Tensor],
    batches: Iterable[Batch],
    temperature: float = 200.0,
    loss_fn: LossFunction = F.cross_entropy,
    current_mask: PruningMask | None = None,
    bn_mode: str = "train",
) -> dict[str, Tensor]:
    """Scores each weight by GraSP's gradient-signal preservation, ``θ ⊙ Hg`` (higher = keep).

    Wang, Zhang & Grosse, 2020, "Picking Winning Tickets Before Training by Preserving Gradient
    Flow" (ICLR). The paper scores ``S = -θ ⊙ Hg`` and removes the weights with the *highest*
    ``S``: removing them reduces the gradient norm ``gᵀg`` least (or increases it). This
    function returns ``-S = θ ⊙ Hg`` so that, like every score here, the *lowest* values are
    pruned and :func:`~lit_prune.pruning.selection.global_prune_mask` removes exactly the
    weights GraSP removes. See :func:`hessian_gradient_product` for ``g``, ``Hg``, the
    temperature and how several calibration batches accumulate.

    The defaults follow the authors' code (alecwangcq/GraSP, ``pruner/GraSP.py``): the
    calibration sample is drawn class by class (``GraSP_fetch_data``, 10 per class for VGG on
    CIFAR-10 and CIFAR-100), grouped by class and split into two halves, ``g`` is accumulated
    over the two halves and then ``Hg`` over the same halves in the same order — give the
    batches of :func:`class_balanced_batches`; the logits are divided by ``T = 200``; and the
    network is in training mode (a freshly built network, ``.eval()`` commented out), so batch
    norm normalises each half with its own statistics (``bn_mode="train"``). lit-prune
    deliberately differs in these points:

    - dropout and drop-path are off while scoring (the reference's VGG has no dropout; with
      dropout on, VGG16-BN's scores are a random draw);
    - the reference sums the two halves' mean losses, lit-prune weights each batch's mean by
      its share of the samples: with halves of equal size (an even sample) the scores are the
      reference's times ``1/4``, the same ranking;
    - the reference re-draws the linear layers of its scoring copy (``reinit=True``, Xavier
      normal); lit-prune scores the network as it is, so the scores do not depend on a draw;
    - the reference keeps the weights whose paper score is ``<=`` the ``int(s·N)``-th
      largest, so it removes one weight fewer than ``int(s·N)`` (fewer still when scores tie
      at that value);
      :func:`~lit_prune.pruning.selection.global_prune_mask` removes exactly ``round(s·N)`` and
      breaks ties at the cut by a seeded random key (GraSP gives weights of dead units exact
      zeros, so many tie).

    Args:
        model: The network; its weights, buffers, modes and gradients are left unchanged.
        params: The parameters to score.
        batches: Calibration batches ``(inputs, targets)``.
        temperature: Divides the logits before the loss (200 in the paper's code).
        loss_fn: ``loss_fn(logits, targets)`` returning the batch-mean loss.
        current_mask: The mask so far; the network is scored with its pruned weights at zero,
            and pruned positions score ``-inf``.
        bn_mode: ``"train"`` (default, the reference code): batch norm uses the statistics of
            each batch; ``"eval"``: its running statistics. Dropout is off in both.

    Returns:
        Name to ``θ ⊙ Hg`` (``-inf`` where pruned), detached, in each parameter's dtype.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: As :func:`hessian_gradient_product`.
        UserError: If ``bn_mode`` is not ``"eval"`` or ``"train"``.
    """
    named = check_model_parameters(model, params)
    keep = current_keep_masks(named, current_mask)
    data = _calibration_batches(batches)
    temperature = check_number(temperature, "temperature", positive=True, meaning="200 in the GraSP paper")
    _check_loss_fn(loss_fn)
    bn_mode = check_bn_mode(bn_mode)
    with scoring_mode(model, bn_mode):
        leaves = _leaves(named)
        product = _hessian_gradient_product(model, leaves, keep, data, loss_fn, temperature)
    return {
        name: _mark_pruned((_masked(leaf, keep[name]) * product[name]).detach(), keep[name])
        for name, leaf in leaves.items()
    }


@register_score(
    "synflow",
    kind="weights",
    needs=("input_shape", "gradients"),
    label="SynFlow",
    iterative=True,
    settings={"bn_mode": "eval", "dtype": "float64"},
)
def synflow_scores(
    model: nn.Module,
    params: Mapping[str, Tensor],
    input_shape: Sequence[int],
    current_mask: PruningMask | None = None,
) -> dict[str, Tensor]:
    """Scores each weight by its synaptic flow ``|θ ⊙ ∂R/∂θ|``, once, without data (SynFlow).

    Tanaka, Kunin, Yamins & Ganguli, 2020, "Pruning neural networks without any data by
    iteratively conserving synaptic flow" (NeurIPS). The network is linearised: every floating
    parameter and buffer is replaced by its absolute value (as the reference code does with the
    whole state dict; the model's own tensors are not modified, so no signs need restoring),
    it runs in eval mode (batch norm uses its running statistics), and one all-ones input of
    ``input_shape`` gives ``R = Σ f(1; |θ|)``. Everything is computed in float64 so that the
    product of many layers neither overflows nor underflows: a deliberate difference from the
    reference (ganguli-lab/Synaptic-Flow, ``Pruners/pruners.py``), which computes in float32
    (its ``model.double()`` is commented out), so scores that underflow to zero or tie there
    are ordered here. This is *one* scoring round;
    SynFlow proper re-scores after each of many small pruning steps, see
    :func:`synflow_prune_mask`.

    Args:
        model: The network; left unchanged (weights, buffers, modes, gradients).
        params: The parameters to score.
        input_shape: Shape of one input sample without the batch dimension, e.g. ``(3, 32, 32)``.
        current_mask: The mask so far; pruned weights are zero in the linearised network and
            score ``-inf``.

    Returns:
        Name to float64 scores (``-inf`` where pruned), on each parameter's device.

    Raises:
        TypeError: If an argument has the wrong type or the model's output is not a tensor.
        ValueError: If ``input_shape`` is not a sequence of positive ints, ``params`` is empty
            or not parameters of ``model``, or ``current_mask`` does not fit ``params``.
    """
    named = check_model_parameters(model, params)
    keep = current_keep_masks(named, current_mask)
    shape = _check_input_shape(input_shape)
    with scoring_mode(model, "eval"):
        return _synflow_scores(model, named, keep, shape)


def synflow_prune_mask(
    model: nn.Module,
    params: Mapping[str, Tensor],
    input_shape: Sequence[int],
    sparsity: float,
    iterations: int = 100,
    current_mask: PruningMask | None = None,
) -> PruningMask:
    """Prunes iteratively by synaptic flow to ``sparsity``, without data (SynFlow).

    Tanaka et al., 2020, "Pruning neural networks without any data by iteratively conserving
    synaptic flow" (NeurIPS), Algorithm 1: ``iterations`` rounds, each re-scoring the surviving
    network with :func:`synflow_scores` and pruning globally to the next point of an
    exponential schedule: the kept fraction after round ``k`` is
    ``d_0 · (d / d_0) ** (k / iterations)``, from the current density ``d_0`` (1 without
    ``current_mask``) to the target density ``d = 1 - sparsity``. Iterating is what avoids
    layer collapse; the last round lands exactly on the target: ``round(sparsity * total)``
    weights are pruned, already-pruned ones included, with ties at each cut broken by
    :func:`~lit_prune.pruning.selection.global_prune_mask`'s seeded rule (the reference prunes
    every score ``<=`` the ``kthvalue`` threshold, ties included).

    Args:
        model: The network; left unchanged.
        params: The parameters to prune.
        input_shape: Shape of one input sample without the batch dimension, e.g. ``(3, 32, 32)``.
        sparsity: Target fraction of pruned weights over ``params``, in ``[0, 1)``.
        iterations: Number of score-and-prune rounds (100 in the paper).
        current_mask: The mask so far; its pruned weights stay pruned. When it already reaches
            ``sparsity`` its pattern is returned unchanged.

    Returns:
        The mask over exactly the names of ``params``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``sparsity`` is outside ``[0, 1)``, ``iterations`` is below 1, or as
            :func:`synflow_scores`.
    """
    named = check_model_parameters(model, params)
    current_keep_masks(named, current_mask)
    shape = _check_input_shape(input_shape)
    return iterative_prune_mask(
        named,
        lambda mask: synflow_scores(model, named, shape, mask),
        lambda scores, step_sparsity, mask: global_prune_mask(scores, step_sparsity, mask),
        sparsity,
        iterations,
        current_mask,
    )


def class_balanced_batches(
    batches: Iterable[Batch],
    num_classes: int,
    samples_per_class: int,
    num_batches: int = 2,
) -> list[Batch]:
    """Draws the first ``samples_per_class`` samples of every class, in GraSP's reference order.

    GraSP's calibration data (Wang et al., 2020, "Picking Winning Tickets Before Training by
    Preserving Gradient Flow", ICLR; alecwangcq/GraSP, ``pruner/GraSP.py``): the stream is
    read in order, and each sample joins its class until the class has ``samples_per_class``
    (``GraSP_fetch_data``, 10 per class for VGG on CIFAR-10 and CIFAR-100); reading stops as
    soon as every class is full. The samples are then grouped by class (all of class 0 in the
    order drawn, then class 1, ...) and cut into ``num_batches`` contiguous batches, batch
    ``k`` ending at sample ``(k + 1) * N // num_batches``. The default, two, gives the
    reference's halves ``[:N // 2]`` and ``[N // 2:]``: with 10 classes the first half holds
    classes 0-4 and the second classes 5-9, so in training mode each half is normalised with
    the batch statistics of its own classes, as in the reference. ``num_batches=1`` gives one
    batch of all ``N = num_classes * samples_per_class`` samples.

    Args:
        batches: Batches ``(inputs, targets)`` with integer class targets of shape ``(B,)``,
            e.g. a training ``DataLoader`` (shuffled, so the draw is random).
        num_classes: Number of classes; targets must lie in ``[0, num_classes)``.
        samples_per_class: Samples to draw of each class.
        num_batches: Number of contiguous batches to cut the class-grouped sample into, at
            most ``N``.

    Returns:
        The calibration batches, on the device of the input batches.

    Raises:
        TypeError: If a count is not an int, or a batch is not a pair of tensors with integer
            targets.
        ValueError: If a count is below 1, ``num_batches`` exceeds the number of samples, a
            target is out of range, shapes disagree, or the stream ends before every class
            has ``samples_per_class`` samples.
    """
    num_classes = check_int(num_classes, "num_classes", 1)
    samples_per_class = check_int(samples_per_class, "samples_per_class", 1)
    num_batches = check_int(num_batches, "num_batches", 1)
    total = num_classes * samples_per_class
    if num_batches > total:
        raise ValueError(
            f"num_batches={num_batches} exceeds the {total} samples drawn ({num_classes} classes x "
            f"{samples_per_class} samples_per_class); every batch needs at least one sample"
        )
    inputs_by_class: list[list[Tensor]] = [[] for _ in range(num_classes)]
    targets_by_class: list[list[Tensor]] = [[] for _ in range(num_classes)]
    counts = [0] * num_classes
    for index, batch in enumerate(batches):
        inputs, targets = _check_batch(batch, index)
        if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.dim() != 1:
            raise TypeError(
                f"batch {index}: class_balanced_batches needs integer class targets of shape (B,), "
                f"got dtype {targets.dtype} and shape {tuple(targets.shape)}"
            )
        if bool(((targets < 0) | (targets >= num_classes)).any()):
            raise ValueError(
                f"batch {index}: targets must lie in [0, {num_classes}) for num_classes={num_classes}, "
                f"got values from {int(targets.min())} to {int(targets.max())}"
            )
        for label in range(num_classes):
            missing = samples_per_class - counts[label]
            if missing == 0:
                continue
            chosen = (targets == label).nonzero().squeeze(1)[:missing]
            if chosen.numel():
                inputs_by_class[label].append(inputs[chosen])
                targets_by_class[label].append(targets[chosen])
                counts[label] += chosen.numel()
        if all(count == samples_per_class for count in counts):
            break
    else:
        short = {label: count for label, count in enumerate(counts) if count < samples_per_class}
        raise ValueError(
            f"the batches ended before every class had {samples_per_class} samples; classes short "
            f"of samples (class: samples found): {short}. Use more data or fewer samples_per_class"
        )
    all_inputs = torch.cat([part for parts in inputs_by_class for part in parts])
    all_targets = torch.cat([part for parts in targets_by_class for part in parts])
    bounds = [(k * total) // num_batches for k in range(num_batches + 1)]
    return [(all_inputs[a:b], all_targets[a:b]) for a, b in zip(bounds, bounds[1:])]


def _calibration_gradient(
    model: nn.Module,
    leaves: dict[str, Tensor],
    keep: Mapping[str, Tensor | None],
    data: list[Batch],
    loss_fn: LossFunction,
    temperature: float,
) -> dict[str, Tensor]:
    """``∇L`` of the mean loss over all samples, summed batch by batch (detached)."""
    total = sum(targets.shape[0] for _, targets in data)
    gradient = {name: torch.zeros_like(leaf) for name, leaf in leaves.items()}
    for inputs, targets in data:
        loss = _batch_loss(model, leaves, keep, inputs, targets, loss_fn, temperature, total)
        for name, grad in zip(leaves, torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)):
            if grad is not None:
                gradient[name] += grad
    return gradient


def _hessian_gradient_product(
    model: nn.Module,
    leaves: dict[str, Tensor],
    keep: Mapping[str, Tensor | None],
    data: list[Batch],
    loss_fn: LossFunction,
    temperature: float,
) -> dict[str, Tensor]:
    """``Hg``: the gradient of ``g · ∇L_b`` summed over batches, with ``g`` held constant."""
    gradient = _calibration_gradient(model, leaves, keep, data, loss_fn, temperature)
    total = sum(targets.shape[0] for _, targets in data)
    product = {name: torch.zeros_like(leaf) for name, leaf in leaves.items()}
    tensors = list(leaves.values())
    for inputs, targets in data:
        loss = _batch_loss(model, leaves, keep, inputs, targets, loss_fn, temperature, total)
        grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
        terms = [(gradient[name] * grad).sum() for name, grad in zip(leaves, grads) if grad is not None]
        if not terms:
            continue
        flow = torch.stack(terms).sum()
        if not flow.requires_grad:
            continue
        for name, second in zip(leaves, torch.autograd.grad(flow, tensors, allow_unused=True)):
            if second is not None:
                product[name] += second
    return {name: value.detach() for name, value in product.items()}


def _batch_loss(
    model: nn.Module,
    leaves: dict[str, Tensor],
    keep: Mapping[str, Tensor | None],
    inputs: Tensor,
    targets: Tensor,
    loss_fn: LossFunction,
    temperature: float,
    total: int,
) -> Tensor:
    """The batch's share of the mean loss over all ``total`` samples, through the masked weights."""
    device = next(iter(leaves.values())).device
    weights = {name: _masked(leaf, keep[name]) for name, leaf in leaves.items()}
    logits = functional_call(model, weights, (inputs.to(device),))
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model must return a logits tensor, got {type(logits).__name__}")
    loss = loss_fn(logits / temperature, targets.to(device))
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError(
            "loss_fn must return a scalar tensor (the mean loss over the batch, the default reduction "
            f"of torch losses), got {loss if not isinstance(loss, Tensor) else tuple(loss.shape)}"
        )
    return loss.reshape(()) * (targets.shape[0] / total)


def _synflow_scores(
    model: nn.Module,
    named: dict[str, nn.Parameter],
    keep: Mapping[str, Tensor | None],
    shape: tuple[int, ...],
) -> dict[str, Tensor]:
    """One SynFlow round on the linearised (absolute-valued, float64, masked) network."""
    linearised = {
        name: tensor.detach().abs().double()
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor.is_floating_point()
    }
    leaves = {
        name: _masked(param.detach().abs().double(), keep[name]).requires_grad_(True) for name, param in named.items()
    }
    device = next(iter(leaves.values())).device
    output = functional_call(
        model, {**linearised, **leaves}, (torch.ones((1, *shape), dtype=torch.float64, device=device),)
    )
    if not isinstance(output, Tensor):
        raise TypeError(f"the model must return a tensor, got {type(output).__name__}")
    grads = torch.autograd.grad(output.sum(), list(leaves.values()), allow_unused=True)
    scores: dict[str, Tensor] = {}
    for (name, leaf), grad in zip(leaves.items(), grads):
        score = torch.zeros_like(leaf) if grad is None else (leaf * grad).abs()
        scores[name] = _mark_pruned(score.detach(), keep[name])
    return scores


def _leaves(named: Mapping[str, nn.Parameter]) -> dict[str, Tensor]:
    """Detached views of the parameters that require grad: gradients never reach ``.grad``."""
    return {name: param.detach().requires_grad_(True) for name, param in named.items()}


def _masked(tensor: Tensor, keep: Tensor | None) -> Tensor:
    return tensor if keep is None else tensor * keep.to(device=tensor.device, dtype=tensor.dtype)


def _mark_pruned(score: Tensor, keep: Tensor | None) -> Tensor:
    return score if keep is None else score.masked_fill(~keep.to(score.device), -math.inf)


def _calibration_batches(batches: Iterable[Batch]) -> list[Batch]:
    if isinstance(batches, Tensor) or not isinstance(batches, Iterable):
        raise TypeError(
            f"batches must be an iterable of (inputs, targets) pairs, e.g. a DataLoader or a list, "
            f"got {type(batches).__name__}"
        )
    data = [_check_batch(batch, index) for index, batch in enumerate(batches)]
    if not data:
        raise ValueError("batches is empty: give at least one calibration batch (inputs, targets)")
    return data


def _check_batch(batch: object, index: int) -> Batch:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError(f"batch {index} must be a pair (inputs, targets), got {type(batch).__name__}")
    inputs, targets = batch
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(
            f"batch {index} must hold two tensors (inputs, targets), got "
            f"({type(inputs).__name__}, {type(targets).__name__})"
        )
    if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise ValueError(
            f"batch {index}: inputs and targets need the same non-zero batch size in dimension 0, got "
            f"shapes {tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    return inputs, targets


def _check_loss_fn(loss_fn: LossFunction) -> None:
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(logits, targets), got {type(loss_fn).__name__}")


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"input_shape must be the shape of one sample without the batch dimension, e.g. (3, 32, 32), "
            f"got {input_shape!r}"
        )
    if not input_shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(
            f"input_shape must be a non-empty sequence of positive ints (one sample, no batch "
            f"dimension, e.g. (3, 32, 32)), got {tuple(input_shape)!r}"
        )
    return tuple(input_shape)
