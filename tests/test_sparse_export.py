"""Tests of COO/CSR export, export verification and sparse inference."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from lit_prune.pruning.sparse_export import (
    DensifyingConv,
    SparseLinear,
    export_coo,
    masked_csr,
    to_sparse_inference,
    verify_coo_against_mask,
)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect", bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _prune(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Random mask over every weight matrix/kernel, applied to the model."""
    mask = {name: torch.rand_like(p) >= sparsity for name, p in model.named_parameters() if p.dim() > 1}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in mask:
                param.mul_(mask[name])
    return mask


def test_coo_export_indices_equal_the_mask_nonzeros() -> None:
    torch.manual_seed(0)
    model = _cnn()
    mask = _prune(model, 0.7)
    parameters = dict(model.named_parameters())
    coo = export_coo(model, mask)
    assert set(coo) == set(mask)
    for name, sparse in coo.items():
        assert sparse.layout == torch.sparse_coo and sparse.is_coalesced()
        assert sparse.shape == mask[name].shape
        assert torch.equal(sparse.indices(), mask[name].nonzero().t())
        assert torch.equal(sparse.values(), parameters[name].detach()[mask[name]])
        assert torch.equal(sparse.to_dense(), parameters[name].detach())
    assert verify_coo_against_mask(coo, mask, model) == []


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")  # torch.load checks them, as wanted
def test_export_survives_a_save_and_load_round_trip() -> None:
    torch.manual_seed(0)
    model = _mlp()
    mask = _prune(model, 0.8)
    buffer = io.BytesIO()
    torch.save(export_coo(model, mask), buffer)
    buffer.seek(0)
    assert verify_coo_against_mask(torch.load(buffer), mask, model) == []


def test_verification_catches_one_corrupted_index() -> None:
    torch.manual_seed(0)
    model = _mlp()
    mask = _prune(model, 0.5)
    coo = export_coo(model, mask)
    layer = "2.weight"
    indices = coo[layer].indices().clone()
    indices[:, 0] = (~mask[layer]).nonzero()[0]  # move the first kept weight onto a pruned position
    coo[layer] = torch.sparse_coo_tensor(indices, coo[layer].values(), coo[layer].shape, check_invariants=True)
    problems = verify_coo_against_mask(coo, mask)
    assert problems == [
        f"{layer}: 2 indices differ from the mask (1 exported but pruned or outside the shape, "
        "1 kept in the mask but not exported)"
    ]


def test_verification_catches_wrong_values_missing_layers_and_bad_indices() -> None:
    torch.manual_seed(0)
    model = _mlp()
    mask = _prune(model, 0.5)
    coo = export_coo(model, mask)
    changed = coo["0.weight"].values().clone()
    changed[:3] += 1.0
    coo["0.weight"] = torch.sparse_coo_tensor(
        coo["0.weight"].indices(), changed, coo["0.weight"].shape, check_invariants=True
    )
    del coo["4.weight"]
    outside = coo["2.weight"].indices().clone()
    outside[0, -1] = 10_000  # beyond the 32 rows
    coo["2.weight"] = torch.sparse_coo_tensor(
        outside, coo["2.weight"].values(), coo["2.weight"].shape, check_invariants=False
    )
    problems = verify_coo_against_mask(coo, mask, model)
    assert "4.weight: kept in the mask but missing from the export" in problems
    assert "0.weight: 3 values differ from the model's weights at their indices" in problems
    index_problem = "2.weight: 2 indices differ from the mask (1 exported but pruned or outside"
    assert any(problem.startswith(index_problem) for problem in problems)
    assert len(problems) == 3
    assert verify_coo_against_mask(coo, mask) != []  # index problems are found without the model too


def test_export_rejects_a_mask_of_the_wrong_shape_or_type() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="shape"):
        export_coo(model, {"0.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="torch.bool"):
        export_coo(model, {"0.weight": torch.ones(64, 20)})
    with pytest.raises(ValueError, match="does not have"):
        export_coo(model, {"fc.weight": torch.ones(64, 20, dtype=torch.bool)})


def test_csr_of_a_kernel_restores_the_masked_weight() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 4, 3, 3)
    keep = torch.rand(6, 4, 3, 3) > 0.6
    csr = masked_csr(weight, keep)
    assert csr.layout == torch.sparse_csr and csr.shape == (6, 36)
    assert csr.col_indices().dtype == torch.int32
    assert torch.equal(csr.to_dense().reshape(weight.shape), weight * keep)
    assert csr.values().numel() == int(keep.sum())


@pytest.mark.parametrize("layout", ["csr", "coo"])
def test_sparse_mlp_matches_the_dense_one(layout: str) -> None:
    torch.manual_seed(0)
    model = _mlp().eval()
    mask = _prune(model, 0.8)
    sparse = to_sparse_inference(model, mask, linear_layout=layout)
    assert sparse.sparse_layers == ("0", "2", "4")
    assert all(isinstance(sparse.network[i], SparseLinear) for i in (0, 2, 4))
    assert sparse.network[0].weight.layout == (torch.sparse_csr if layout == "csr" else torch.sparse_coo)
    assert isinstance(model[0], nn.Linear)  # the original is untouched
    inputs = torch.randn(16, 20)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(inputs), model(inputs), atol=1e-5, rtol=0)


def test_sparse_cnn_matches_the_dense_one() -> None:
    torch.manual_seed(0)
    model = _cnn()
    model(torch.randn(4, 3, 12, 12))  # non-trivial batch-norm statistics
    model.eval()
    mask = _prune(model, 0.7)
    sparse = to_sparse_inference(model, mask)
    assert sparse.sparse_layers == ("0", "3", "5", "8")
    assert isinstance(sparse.network[5], DensifyingConv) and sparse.network[5].weight.layout == torch.sparse_coo
    inputs = torch.randn(3, 3, 12, 12)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(inputs), model(inputs), atol=1e-5, rtol=0)


def test_sparse_copy_applies_the_mask_and_handles_token_inputs() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=5).eval()
    mask = {name: torch.rand_like(p) >= 0.6 for name, p in model.named_parameters() if p.dim() == 2}
    sparse = to_sparse_inference(model, mask)  # the model's weights are NOT zeroed: the copy applies the mask
    assert "blocks.0.attn.qkv" in sparse.sparse_layers  # a linear layer on (batch, tokens, features)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in mask:
                param.mul_(mask[name])
    inputs = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(sparse(inputs), model(inputs), atol=1e-5, rtol=0)


def test_sparse_inference_rejects_an_unknown_layout() -> None:
    with pytest.raises(ValueError, match="linear_layout"):
        to_sparse_inference(_mlp(), {}, linear_layout="bsr")
