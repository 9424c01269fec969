"""Tests of the saliency scores: SNIP, GraSP (Hessian-gradient product) and SynFlow."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_prune.errors import UserError
from lit_prune.pruning import PruningMask, global_prune_mask, prunable_parameters, random_scores
from lit_prune.pruning.saliency import (
    class_balanced_batches,
    grasp_scores,
    hessian_gradient_product,
    snip_scores,
    synflow_prune_mask,
    synflow_scores,
)


class _ConvBNNet(nn.Module):
    """Convolution, batch norm, ReLU, pooling and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


class _DropoutNet(nn.Module):
    """``fc2(dropout(relu(fc1(x))))``, bias-free, small enough to differentiate by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(5, 3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


class _BNTanhNet(nn.Module):
    """``fc2(tanh(bn(fc1(x))))`` in float64: batch norm on batch statistics makes the halves matter."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


class _TanhNet(nn.Module):
    """A smooth two-layer network (no kinks, so finite differences are accurate)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _conv_net(seed: int = 0) -> _ConvBNNet:
    torch.manual_seed(seed)
    net = _ConvBNNet()
    with torch.no_grad():  # non-trivial running statistics, so eval mode differs from train mode
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.2, 0.2)
    return net


def _tanh_net(seed: int = 0) -> _TanhNet:
    torch.manual_seed(seed)
    return _TanhNet().double()


def _image_data(n: int = 16, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=generator), torch.randint(0, 4, (n,), generator=generator)


def _vector_data(n: int = 16, seed: int = 1) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _bitwise_equal(a: Tensor, b: Tensor) -> bool:
    if a.is_floating_point():
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return torch.equal(a, b)


def _half_mask(params: dict[str, Tensor], seed: int = 3) -> PruningMask:
    return global_prune_mask(random_scores(params, seed=seed), 0.5)


_ScoreFn = Callable[[nn.Module, dict[str, Tensor], PruningMask | None], dict[str, Tensor]]


def _snip(model: nn.Module, params: dict[str, Tensor], mask: PruningMask | None) -> dict[str, Tensor]:
    return snip_scores(model, params, [_image_data()], current_mask=mask)


def _grasp(model: nn.Module, params: dict[str, Tensor], mask: PruningMask | None) -> dict[str, Tensor]:
    x, y = _image_data()
    return grasp_scores(model, params, [(x[:8], y[:8]), (x[8:], y[8:])], temperature=5.0, current_mask=mask)


def _synflow(model: nn.Module, params: dict[str, Tensor], mask: PruningMask | None) -> dict[str, Tensor]:
    return synflow_scores(model, params, (3, 8, 8), current_mask=mask)


SCORE_FNS = {"snip": _snip, "grasp": _grasp, "synflow": _synflow}


# ----------------------------------------------------------------------------------------- SNIP


def test_snip_is_gradient_times_weight_in_eval_mode_worked_out_by_hand() -> None:
    """SNIP on ``fc2(dropout(relu(fc1 x)))``: the chain rule written out, dropout the identity."""
    torch.manual_seed(0)
    model = _DropoutNet().double().train()  # left in training mode: scoring must switch dropout off
    params = prunable_parameters(model)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    w1, w2 = model.fc1.weight.detach(), model.fc2.weight.detach()

    pre = x @ w1.T
    hidden = pre.clamp(min=0)
    logits = hidden @ w2.T
    delta = (logits.softmax(dim=1) - F.one_hot(y, 3).double()) / len(y)  # dL/dlogits of the mean loss
    grad_w2 = delta.T @ hidden
    grad_w1 = ((delta @ w2) * (pre > 0).double()).T @ x

    scores = snip_scores(model, params, [(x, y)])
    torch.testing.assert_close(scores["fc1.weight"], (grad_w1 * w1).abs(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(scores["fc2.weight"], (grad_w2 * w2).abs(), rtol=1e-12, atol=1e-15)
    assert model.training and model.drop.training, "the model's modes come back as they were"


def test_snip_defaults_to_eval_mode_and_bn_mode_train_uses_batch_statistics() -> None:
    model = _conv_net()
    params = prunable_parameters(model)
    x, y = _image_data()
    for bn_mode, reference in (("eval", copy.deepcopy(model).eval()), ("train", copy.deepcopy(model).train())):
        F.cross_entropy(reference(x), y).backward()
        scores = snip_scores(model, params, [(x, y)], bn_mode=bn_mode)
        for name, param in reference.named_parameters():
            if name in params:
                torch.testing.assert_close(scores[name], (param.grad * param.detach()).abs(), rtol=1e-5, atol=1e-8)
    default = snip_scores(model, params, [(x, y)])["conv1.weight"]
    assert torch.equal(default, snip_scores(model, params, [(x, y)], bn_mode="eval")["conv1.weight"])
    assert not torch.allclose(default, snip_scores(model, params, [(x, y)], bn_mode="train")["conv1.weight"])


def test_snip_accumulates_batches_as_one_batch_of_all_samples() -> None:
    model = _tanh_net()
    params = prunable_parameters(model)
    x, y = _vector_data(16)
    whole = snip_scores(model, params, [(x, y)])
    split = snip_scores(model, params, [(x[:5], y[:5]), (x[5:], y[5:])])
    for name in params:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------- GraSP


def test_hessian_gradient_product_matches_finite_differences() -> None:
    model = _tanh_net()
    params = prunable_parameters(model)
    x, y = _vector_data(16)
    temperature = 3.0
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]  # unequal batches: each is weighted by its share
    product = hessian_gradient_product(model, params, batches, temperature=temperature)

    def gradient_at(shift: float, direction: dict[str, Tensor]) -> dict[str, Tensor]:
        probe = copy.deepcopy(model)
        probe_params = dict(probe.named_parameters())
        with torch.no_grad():
            for name, step in direction.items():
                probe_params[name].add_(step, alpha=shift)
        loss = F.cross_entropy(probe(x) / temperature, y)
        grads = torch.autograd.grad(loss, [probe_params[name] for name in params])
        return dict(zip(params, grads))

    gradient = gradient_at(0.0, {})
    epsilon = 1e-5
    plus, minus = gradient_at(epsilon, gradient), gradient_at(-epsilon, gradient)
    for name in params:
        finite_difference = (plus[name] - minus[name]) / (2 * epsilon)
        assert finite_difference.abs().max() > 1e-6  # the check is not vacuous
        torch.testing.assert_close(product[name], finite_difference, rtol=1e-6, atol=1e-10)


def test_grasp_scores_are_weight_times_hg_and_prune_the_highest_paper_scores() -> None:
    model = _tanh_net()
    params = prunable_parameters(model)
    batches = [_vector_data(16)]
    product = hessian_gradient_product(model, params, batches, temperature=4.0)
    scores = grasp_scores(model, params, batches, temperature=4.0)
    for name, param in params.items():
        torch.testing.assert_close(scores[name], param.detach() * product[name])

    mask = global_prune_mask(scores, 0.5)
    paper_scores = torch.cat([(-params[n].detach() * product[n]).flatten() for n in params])
    expected_pruned = torch.zeros_like(paper_scores, dtype=torch.bool)
    expected_pruned[paper_scores.topk(round(0.5 * paper_scores.numel())).indices] = True
    actually_pruned = torch.cat([(~mask[n]).flatten() for n in params])
    assert torch.equal(actually_pruned, expected_pruned)


@pytest.mark.parametrize("make_model", ["tanh", "conv_bn_eval"])
def test_grasp_two_batches_of_eight_equal_one_batch_of_sixteen(make_model: str) -> None:
    if make_model == "tanh":
        model, (x, y), bn_mode = _tanh_net(), _vector_data(16), "train"
    else:
        model, (x, y), bn_mode = _conv_net(), _image_data(16), "eval"
    params = prunable_parameters(model)
    whole = grasp_scores(model, params, [(x, y)], temperature=10.0, bn_mode=bn_mode)
    split = grasp_scores(model, params, [(x[:8], y[:8]), (x[8:], y[8:])], temperature=10.0, bn_mode=bn_mode)
    for name in params:
        assert whole[name].abs().max() > 0
        scale = whole[name].abs().max()
        torch.testing.assert_close(split[name] / scale, whole[name] / scale, rtol=1e-5, atol=1e-5)


def test_grasp_over_two_class_grouped_halves_equals_the_reference_computed_with_explicit_hessians() -> None:
    """alecwangcq/GraSP: g = ∇L_a + ∇L_b over the halves, then Hg = (H_a + H_b) g, batch norm per half.

    The Hessians are built as explicit matrices of each half's mean loss (batch norm on that
    half's statistics); lit-prune weights each half by its share, so with equal halves its
    ``θ ⊙ Hg`` is the reference's times 1/4.
    """
    torch.manual_seed(0)
    model = _BNTanhNet().double()
    params = prunable_parameters(model)
    generator = torch.Generator().manual_seed(2)
    stream = [(torch.randn(12, 3, generator=generator, dtype=torch.float64), torch.arange(12) % 3)]
    halves = class_balanced_batches(stream, num_classes=3, samples_per_class=4)
    assert [t.tolist() for _, t in halves] == [[0, 0, 0, 0, 1, 1], [1, 1, 2, 2, 2, 2]]
    temperature = 2.0

    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    theta = torch.cat([params[n].detach().reshape(-1) for n in names])
    others = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    reference = copy.deepcopy(model).train()

    def half_loss(flat: Tensor, inputs: Tensor, targets: Tensor) -> Tensor:
        weights = {n: piece.reshape(shape) for n, piece, shape in zip(names, flat.split(sizes), shapes)}
        stats = {n: b.clone() for n, b in model.named_buffers()}
        logits = torch.func.functional_call(reference, {**others, **stats, **weights}, (inputs,))
        return F.cross_entropy(logits / temperature, targets)

    gradient = sum(
        torch.autograd.functional.jacobian(lambda f, half=half: half_loss(f, *half), theta) for half in halves
    )
    hessians = [torch.autograd.functional.hessian(lambda f, half=half: half_loss(f, *half), theta) for half in halves]
    expected = theta * (sum(hessians) @ gradient) / 4

    scores = grasp_scores(model, params, halves, temperature=temperature)
    got = torch.cat([scores[n].reshape(-1) for n in names])
    assert expected.abs().max() > 1e-6
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-14)
    whole = class_balanced_batches(stream, num_classes=3, samples_per_class=4, num_batches=1)
    one_batch = grasp_scores(model, params, whole, temperature=temperature)
    assert not torch.allclose(torch.cat([one_batch[n].reshape(-1) for n in names]), expected, rtol=1e-3, atol=1e-9)


def test_grasp_temperature_changes_the_scores() -> None:
    model = _tanh_net()
    params = prunable_parameters(model)
    batches = [_vector_data(16)]
    cold = grasp_scores(model, params, batches, temperature=1.0)
    hot = grasp_scores(model, params, batches, temperature=200.0)
    cold_direction = cold["fc1.weight"] / cold["fc1.weight"].norm()
    assert not torch.allclose(cold_direction, hot["fc1.weight"] / hot["fc1.weight"].norm())


# ------------------------------------------------------------------------------ shared contracts


@pytest.mark.parametrize("method", sorted(SCORE_FNS))
def test_scores_respect_the_current_mask(method: str) -> None:
    score_fn: _ScoreFn = SCORE_FNS[method]
    unmasked_model = _conv_net()
    params = prunable_parameters(unmasked_model)
    mask = _half_mask(params)
    masked_model = mask.apply_(copy.deepcopy(unmasked_model))
    masked_params = prunable_parameters(masked_model)

    scores = score_fn(unmasked_model, params, mask)
    on_zeroed = score_fn(masked_model, masked_params, mask)
    without_mask = score_fn(masked_model, masked_params, None)
    for name in params:
        pruned = ~mask[name]
        assert torch.all(scores[name][pruned] == -torch.inf)
        assert torch.isfinite(scores[name][mask[name]]).all()
        # The network is scored with its pruned weights at zero, whether or not they already are.
        torch.testing.assert_close(scores[name], on_zeroed[name])
        kept_scores, kept_without = scores[name][mask[name]], without_mask[name][mask[name]]
        if method == "grasp":
            # GraSP's g is the gradient of the sparse network (zero at pruned weights, which
            # training keeps fixed), so Hg differs from that of the dense network with zeros in it.
            assert not torch.allclose(kept_scores, kept_without)
        else:
            torch.testing.assert_close(kept_scores, kept_without)

    next_mask = global_prune_mask(scores, 0.75, mask)
    assert next_mask.num_pruned() == round(0.75 * next_mask.num_total())
    for name in params:
        assert not bool((next_mask[name] & ~mask[name]).any())  # pruned stay pruned


@pytest.mark.parametrize("method", sorted(SCORE_FNS))
def test_scoring_leaves_the_model_unchanged(method: str) -> None:
    model = _conv_net()
    model.eval()
    model.bn1.train()  # a mixed state that must come back as it was
    params = prunable_parameters(model)
    before = _snapshot(model)
    flags = {name: module.training for name, module in model.named_modules()}

    scores = SCORE_FNS[method](model, params, _half_mask(params))

    assert set(scores) == set(params)
    after = model.state_dict()
    for name, tensor in before.items():
        assert _bitwise_equal(after[name], tensor), name  # weights and batch-norm statistics
    assert all(param.grad is None for param in model.parameters())
    assert {name: module.training for name, module in model.named_modules()} == flags


def test_scoring_errors_name_the_problem() -> None:
    model = _conv_net()
    params = prunable_parameters(model)
    batches = [_image_data()]
    with pytest.raises(UserError, match=r"bn_mode must be one of \['eval', 'train'\].*'batch'"):
        snip_scores(model, params, batches, bn_mode="batch")
    with pytest.raises(UserError, match="bn_mode must be one of"):
        grasp_scores(model, params, batches, bn_mode=True)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        grasp_scores(model, params, batches, temperature=0.0)
    with pytest.raises(ValueError, match="batches is empty"):
        snip_scores(model, params, [])
    with pytest.raises(ValueError, match="is not the parameter"):
        snip_scores(model, prunable_parameters(_conv_net()), batches)
    with pytest.raises(ValueError, match="params is empty"):
        snip_scores(model, {}, batches)
    with pytest.raises(ValueError, match="not scored or probed"):
        snip_scores(model, {"fc.weight": params["fc.weight"]}, batches, current_mask=_half_mask(params))
    with pytest.raises(TypeError, match="pair"):
        snip_scores(model, params, [(batches[0][0],)])
    with pytest.raises(ValueError, match="scalar tensor"):
        snip_scores(model, params, batches, loss_fn=lambda logits, y: F.cross_entropy(logits, y, reduction="none"))
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        synflow_prune_mask(model, params, (3, 8, 8), 0.5, iterations=0)
    with pytest.raises(ValueError, match="positive ints"):
        synflow_scores(model, params, (3, 0, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        synflow_prune_mask(model, params, (3, 8, 8), 1.0)


# -------------------------------------------------------------------------------------- SynFlow


def test_synflow_scores_match_the_linearised_network_computed_by_hand() -> None:
    model = _conv_net()
    params = prunable_parameters(model)
    scores = synflow_scores(model, params, (3, 8, 8))

    reference = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    reference(torch.ones(1, 3, 8, 8, dtype=torch.float64)).sum().backward()
    for name, param in reference.named_parameters():
        if name in params:
            assert scores[name].dtype == torch.float64
            torch.testing.assert_close(scores[name], (param.grad * param.detach()).abs())


def test_synflow_conserves_flow_through_every_layer() -> None:
    """Tanaka et al. 2020, Theorem 1: in a bias-free ReLU net each layer's scores sum to R."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(6, 9, bias=False), nn.ReLU(), nn.Linear(9, 5, bias=False), nn.ReLU(), nn.Linear(5, 3, bias=False)
    )
    params = prunable_parameters(model)
    scores = synflow_scores(model, params, (6,))
    weights = [params[name].detach().abs().double() for name in ("0.weight", "2.weight", "4.weight")]
    flow = (weights[2] @ weights[1] @ weights[0] @ torch.ones(6, dtype=torch.float64)).sum()
    for name in params:
        torch.testing.assert_close(scores[name].sum(), flow)


def test_synflow_prune_mask_reaches_the_exact_sparsity_without_data() -> None:
    assert set(inspect.signature(synflow_prune_mask).parameters) == {
        "model", "params", "input_shape", "sparsity", "iterations", "current_mask",
    }  # fmt: skip
    model = _conv_net()
    params = prunable_parameters(model)
    mask = synflow_prune_mask(model, params, (3, 8, 8), sparsity=0.9, iterations=10)
    assert set(mask) == set(params)
    assert mask.num_pruned() == round(0.9 * mask.num_total())

    current = _half_mask(params)
    further = synflow_prune_mask(model, params, (3, 8, 8), sparsity=0.8, iterations=5, current_mask=current)
    assert further.num_pruned() == round(0.8 * further.num_total())
    for name in params:
        assert not bool((further[name] & ~current[name]).any())
    unchanged = synflow_prune_mask(model, params, (3, 8, 8), sparsity=0.3, iterations=5, current_mask=current)
    assert unchanged.equals(current)


def test_synflow_single_iteration_is_one_shot_pruning_by_its_scores() -> None:
    model = _conv_net()
    params = prunable_parameters(model)
    one_shot = global_prune_mask(synflow_scores(model, params, (3, 8, 8)), 0.7)
    assert synflow_prune_mask(model, params, (3, 8, 8), sparsity=0.7, iterations=1).equals(one_shot)
    iterative = synflow_prune_mask(model, params, (3, 8, 8), sparsity=0.7, iterations=20)
    assert not iterative.equals(one_shot)  # re-scoring the survivors changes the choice


# ------------------------------------------------------------------------- calibration sampling


def _labelled_stream(labels: list[list[int]], consumed: list[int]) -> Iterator[tuple[Tensor, Tensor]]:
    for index, batch in enumerate(labels):
        consumed.append(index)
        targets = torch.tensor(batch)
        inputs = targets.double()[:, None].expand(-1, 2) + torch.arange(len(batch))[:, None] / 100
        yield inputs, targets


def test_class_balanced_batches_draws_each_class_equally_and_stops_early() -> None:
    consumed: list[int] = []
    stream = _labelled_stream([[0, 0, 0, 1], [2, 0, 1], [1, 2, 2], [0, 1, 2, 3]], consumed)
    batches = class_balanced_batches(stream, num_classes=3, samples_per_class=2, num_batches=1)
    assert consumed == [0, 1, 2]  # the fourth batch is never read
    assert len(batches) == 1
    inputs, targets = batches[0]
    assert targets.tolist() == [0, 0, 1, 1, 2, 2]  # grouped by class, as GraSP_fetch_data
    assert inputs[:, 0].round().long().tolist() == targets.tolist()  # inputs follow their targets
    assert inputs[:, 1].tolist() == pytest.approx([0.0, 0.01, 1.03, 1.02, 2.0, 2.01])  # in the order drawn


def test_class_balanced_batches_default_to_the_reference_halves() -> None:
    stream = [[1, 0, 2, 1, 0, 2, 2, 1, 0], [0, 1, 2]]
    halves = class_balanced_batches(_labelled_stream(stream, []), num_classes=3, samples_per_class=3)
    assert [t.tolist() for _, t in halves] == [[0, 0, 0, 1], [1, 1, 2, 2, 2]]  # [:N // 2] and [N // 2:]
    quarters = class_balanced_batches(_labelled_stream(stream, []), num_classes=3, samples_per_class=3, num_batches=4)
    assert [len(t) for _, t in quarters] == [2, 2, 2, 3]


def test_class_balanced_batches_errors() -> None:
    with pytest.raises(ValueError, match=r"classes short of samples .*\{2: 1\}"):
        class_balanced_batches(_labelled_stream([[0, 1, 2, 0, 1]], []), num_classes=3, samples_per_class=2)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        class_balanced_batches(_labelled_stream([[0, 5]], []), num_classes=3, samples_per_class=1)
    with pytest.raises(ValueError, match="samples_per_class must be an integer >= 1"):
        class_balanced_batches([], num_classes=3, samples_per_class=0)
    with pytest.raises(ValueError, match="num_batches=7 exceeds the 6 samples"):
        class_balanced_batches(_labelled_stream([[0, 1, 2, 0, 1, 2]], []), 3, 2, num_batches=7)
