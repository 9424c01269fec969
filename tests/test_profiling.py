"""Tests of the measurement functions in lit_prune.profiling."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from lit_prune.profiling import (
    EnergyCounter,
    count_macs,
    discover_energy_counters,
    evaluate_topk,
    measure_energy,
    measure_latency,
    measure_memory,
    measure_size,
)
from lit_prune.profiling.energy import NVML_MJ_PER_UNIT, RAPL_MJ_PER_UNIT
from lit_prune.profiling.memory import _peak_and_average

MB = 2**20


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


# ----------------------------------------------------------------------------- latency


def test_latency_fields_are_consistent_and_modes_restored() -> None:
    torch.manual_seed(0)
    model = _small_cnn().train()
    result = measure_latency(model, (torch.randn(4, 3, 16, 16), torch.zeros(4)), warmup=1, repeats=5)
    assert 0 < result.min_ms <= result.median_ms <= result.max_ms
    assert result.min_ms <= result.mean_ms <= result.max_ms
    assert result.repeats == 5
    assert result.batch_size == 4
    assert result.device == "cpu"
    assert model.training and model[1].training
    assert json.loads(json.dumps(result.to_dict()))["repeats"] == 5


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"repeats": 2.5}])
def test_latency_rejects_bad_counts(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        measure_latency(nn.Linear(3, 2), torch.randn(2, 3), **kwargs)


def test_latency_rejects_a_batch_without_tensor() -> None:
    with pytest.raises(TypeError, match="input tensor"):
        measure_latency(nn.Linear(3, 2), [[1.0, 2.0, 3.0]])


# ----------------------------------------------------------------------------- memory


def test_peak_and_average_of_a_known_step_function() -> None:
    # 100 B live for 10 ns, 150 B for 10 ns, 100 B for 20 ns.
    peak, average = _peak_and_average(100, [(10, 50), (20, -50)], start_ns=0, end_ns=40)
    assert peak == 150
    assert average == pytest.approx((100 * 10 + 150 * 10 + 100 * 20) / 40)


def test_memory_counts_weights_input_and_activations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 512, bias=False), nn.ReLU())
    batch = torch.randn(64, 256)
    result = measure_memory(model, batch)
    weights = 256 * 512 * 4
    inputs = 64 * 256 * 4
    activation = 64 * 512 * 4  # Linear output, then a second one for the (out-of-place) ReLU
    assert result.device == "cpu"
    assert result.peak_mb * MB >= weights + inputs + 2 * activation
    assert result.peak_mb * MB <= weights + inputs + 2 * activation + 64 * 1024
    assert weights + inputs <= result.avg_mb * MB <= result.peak_mb * MB


def test_memory_peak_grows_with_batch_size() -> None:
    torch.manual_seed(0)
    model = _small_cnn()
    parameter_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    small = measure_memory(model, torch.randn(2, 3, 32, 32))
    large = measure_memory(model, torch.randn(16, 3, 32, 32))
    for result in (small, large):
        assert result.peak_mb >= parameter_mb
        assert 0 < result.avg_mb <= result.peak_mb
    assert large.peak_mb > small.peak_mb + 1.0  # 14 more samples of 16x32x32 float activations


# ----------------------------------------------------------------------------- energy


def test_energy_on_this_machine_is_measured_or_explained() -> None:
    result = measure_energy(nn.Linear(8, 4), torch.randn(2, 8), repeats=2)
    if result.energy_mj is None:
        assert result.note.startswith("unavailable: ")
        assert "RAPL" in result.note and "NVML" in result.note
        assert result.per_domain_mj == {} and result.domains == ()
    else:
        assert result.energy_mj > 0 and result.domains


def _no_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError


def test_energy_without_counters_is_none_with_the_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyJoules.device import rapl_device

    missing = tmp_path / "no-rapl"
    monkeypatch.setattr(rapl_device, "RAPL_API_DIR", str(missing))
    _no_pynvml(monkeypatch)
    result = measure_energy(nn.Linear(8, 4), torch.randn(2, 8), repeats=2)
    assert result.energy_mj is None
    assert result.note == (
        f"unavailable: RAPL: {missing} does not exist (no RAPL interface, e.g. a VM, a container or a "
        "non-x86 CPU); NVML: the pynvml package (nvidia-ml-py) is not installed"
    )
    assert result.to_dict()["energy_mj"] is None


def _fake_rapl_tree(root: Path) -> tuple[Path, Path]:
    socket = root / "intel-rapl:0"
    dram = socket / "intel-rapl:0:0"
    dram.mkdir(parents=True)
    (socket / "name").write_text("package-0\n")
    (dram / "name").write_text("dram\n")
    (socket / "energy_uj").write_text("1000000\n")
    (dram / "energy_uj").write_text("500\n")
    return socket / "energy_uj", dram / "energy_uj"


def _add_to_counter(path: Path, amount: int) -> None:
    path.write_text(f"{int(path.read_text()) + amount}\n")


def test_energy_from_a_simulated_rapl_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyJoules.device import rapl_device

    package, dram = _fake_rapl_tree(tmp_path)
    monkeypatch.setattr(rapl_device, "RAPL_API_DIR", str(tmp_path))
    _no_pynvml(monkeypatch)
    model = nn.Linear(8, 4)

    def burn(*_: object) -> None:  # each forward pass "costs" 2500 uJ package + 750 uJ dram
        _add_to_counter(package, 2500)
        _add_to_counter(dram, 750)

    model.register_forward_hook(burn)
    result = measure_energy(model, torch.randn(2, 8), repeats=4)
    assert result.per_domain_mj == pytest.approx({"package_0": 2.5, "dram_0": 0.75})
    assert result.energy_mj == pytest.approx(3.25)
    assert result.domains == ("package_0", "dram_0")
    assert "RAPL (package_0, dram_0)" in result.note and "NVML: the pynvml package" in result.note


def _fake_pynvml(energy_mj: list[int]) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    module.NVMLError = NVMLError
    module.nvmlInit = lambda: None
    module.nvmlDeviceGetCount = lambda: 1
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetTotalEnergyConsumption = lambda handle: energy_mj[handle]
    return module


@pytest.fixture
def fresh_nvidia_device_module():
    """Lets a test import pyJoules' NVML module against a fake pynvml, and forgets it afterwards."""
    sys.modules.pop("pyJoules.device.nvidia_device", None)
    yield
    sys.modules.pop("pyJoules.device.nvidia_device", None)


def test_energy_from_a_simulated_nvml_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_nvidia_device_module: None
) -> None:
    from pyJoules.device import rapl_device

    monkeypatch.setattr(rapl_device, "RAPL_API_DIR", str(tmp_path / "no-rapl"))
    counter = [10_000]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(counter))
    model = nn.Linear(8, 4)
    model.register_forward_hook(lambda *_: counter.__setitem__(0, counter[0] + 40))  # 40 mJ per pass
    result = measure_energy(model, torch.randn(2, 8), repeats=5)
    assert result.per_domain_mj == pytest.approx({"nvidia_gpu_0": 40.0})
    assert result.energy_mj == pytest.approx(40.0)
    assert "NVML (nvidia_gpu_0)" in result.note and "RAPL:" in result.note


class _FakeDevice:
    def __init__(self, values: list[float]) -> None:
        self.values = values

    def get_energy(self) -> list[float]:
        return list(self.values)

    def get_configured_domains(self) -> list[str]:
        return ["package_0"]


def _counting_model(device: _FakeDevice, readings: list[float]) -> nn.Module:
    """A model whose n-th forward pass sets the fake counter to ``readings[n]``."""
    model = nn.Linear(8, 4)
    calls = iter(readings)
    model.register_forward_hook(lambda *_: device.values.__setitem__(0, next(calls)))
    return model


def test_energy_reports_a_wrapped_counter_as_unavailable() -> None:
    device = _FakeDevice([0.0])
    model = _counting_model(device, [5_000_000.0, 6_000_000.0, 10.0, 1_000.0])  # wraps in the 2nd timed pass
    counters = [EnergyCounter(name="RAPL", device=device, mj_per_unit=RAPL_MJ_PER_UNIT)]
    result = measure_energy(model, torch.randn(2, 8), repeats=3, discover=lambda: (counters, []))
    assert result.energy_mj is None
    assert "package_0 wrapped around" in result.note


def test_energy_reports_a_counter_that_did_not_advance_as_unavailable() -> None:
    device = _FakeDevice([0.0])
    model = _counting_model(device, [7.0, 7.0, 7.0])
    counters = [EnergyCounter(name="RAPL", device=device, mj_per_unit=RAPL_MJ_PER_UNIT)]
    result = measure_energy(model, torch.randn(2, 8), repeats=2, discover=lambda: (counters, []))
    assert result.energy_mj is None
    assert "did not advance" in result.note


def test_energy_units() -> None:
    assert RAPL_MJ_PER_UNIT == 1e-3  # RAPL energy_uj counts microjoules
    assert NVML_MJ_PER_UNIT == 1.0  # nvmlDeviceGetTotalEnergyConsumption counts millijoules


def test_discovery_on_this_machine_names_what_is_missing() -> None:
    counters, reasons = discover_energy_counters()
    assert len(counters) + len(reasons) == 2
    assert all(reason.startswith(("RAPL: ", "NVML: ")) for reason in reasons)


# ----------------------------------------------------------------------------- MACs


def test_macs_of_a_single_convolution() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    result = count_macs(conv, torch.randn(2, 3, 16, 16))  # per image: batch size 2 is cut to 1
    assert result.macs == 16 * 16 * 8 * 3 * 3 * 3  # output elements * in_channels * kh * kw = 55296
    assert result.nonzero_macs == result.macs
    assert result.params_total == result.params_nonzero == 8 * 3 * 3 * 3


def test_macs_of_a_grouped_strided_convolution() -> None:
    conv = nn.Conv2d(4, 8, 3, stride=2, groups=2)
    result = count_macs(conv, torch.randn(1, 4, 9, 9))
    assert result.macs == 4 * 4 * 8 * 2 * 3 * 3  # 4x4 output, in_channels / groups = 2
    assert result.params_total == 8 * 2 * 3 * 3 + 8


def test_macs_of_a_single_linear_layer() -> None:
    result = count_macs(nn.Linear(20, 5), torch.randn(4, 20))
    assert result.macs == 20 * 5
    assert result.params_total == 105


def test_nonzero_macs_at_exactly_half_sparsity() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    conv_macs = 8 * 8 * 8 * 3 * 3 * 3
    linear_macs = 8 * 8 * 8 * 10
    with torch.no_grad():
        model[0].weight.view(-1)[::2] = 0.0  # 108 of 216 weights
    result = count_macs(model, torch.randn(1, 3, 8, 8))
    assert result.macs == conv_macs + linear_macs
    assert result.nonzero_macs == conv_macs // 2 + linear_macs
    assert result.params_nonzero == result.params_total - 108


@pytest.mark.filterwarnings("ignore:No handlers found:UserWarning")  # aten::unbind, 0 MACs
def test_macs_of_a_small_vision_transformer() -> None:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    model.train()
    dense = count_macs(model, torch.randn(2, 3, 32, 32))
    assert dense.macs > 0 and dense.nonzero_macs == dense.macs
    assert model.training  # mode restored
    qkv = model.blocks[0].attn.qkv.weight
    with torch.no_grad():
        qkv.view(-1)[::2] = 0.0
    pruned = count_macs(model, torch.randn(1, 3, 32, 32))
    tokens = (32 // 8) ** 2 + 1  # patches plus the class token
    assert pruned.macs == dense.macs
    assert dense.macs - pruned.nonzero_macs == tokens * qkv.numel() // 2


# ----------------------------------------------------------------------------- size


def _prune_randomly(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    mask = {name: torch.rand_like(param) >= sparsity for name, param in model.named_parameters() if param.dim() > 1}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in mask:
                param.mul_(mask[name])
    return mask


def test_size_of_a_sparse_linear_layer() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(512, 512)
    dense = measure_size(layer)
    assert dense.sparse_bytes == dense.dense_bytes  # no zeros, nothing to gain
    assert dense.dense_bytes > 512 * 513 * 4
    mask = _prune_randomly(layer, 0.9)
    with_mask = measure_size(layer, mask)
    from_zeros = measure_size(layer)
    assert with_mask.dense_bytes == dense.dense_bytes
    assert with_mask.sparse_bytes < 0.25 * with_mask.dense_bytes  # CSR: ~10 % values + ~10 % int32 columns
    assert from_zeros.sparse_bytes == with_mask.sparse_bytes
    assert with_mask.sparse_mb == pytest.approx(with_mask.sparse_bytes / MB)


def test_size_of_a_sparse_conv_net() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Conv2d(64, 128, 3), nn.Conv2d(128, 128, 3))
    mask = _prune_randomly(model, 0.9)
    result = measure_size(model, mask)
    assert result.sparse_bytes < 0.3 * result.dense_bytes


def test_size_rejects_a_mask_for_an_unknown_parameter() -> None:
    with pytest.raises(ValueError, match="does not have"):
        measure_size(nn.Linear(4, 4), {"fc.weight": torch.ones(4, 4, dtype=torch.bool)})


# ----------------------------------------------------------------------------- accuracy


def test_topk_accuracy_on_known_logits() -> None:
    # The "model" returns its input, so the inputs are the logits.
    logits = torch.tensor(
        [
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # target 0: rank 1
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # target 3: rank 4
            [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # target 1: rank 6
            [0.0, 8.0, 2.0, 3.0, 4.0, 5.0],  # target 1: rank 1
        ]
    )
    targets = torch.tensor([0, 3, 1, 1])
    batches = [(logits[:2], targets[:2]), (logits[2:], targets[2:])]
    result = evaluate_topk(nn.Identity(), batches, topk=(1, 5))
    assert result == {"top1": 0.5, "top5": 0.75}


def test_topk_is_none_when_there_are_fewer_classes_than_k() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    result = evaluate_topk(nn.Identity(), [(logits, torch.tensor([2, 1]))])
    assert result == {"top1": 0.5, "top5": None}


def test_topk_rejects_empty_input_and_bad_k() -> None:
    with pytest.raises(ValueError, match="no samples"):
        evaluate_topk(nn.Identity(), [])
    with pytest.raises(ValueError, match="topk"):
        evaluate_topk(nn.Identity(), [(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long))], topk=(0,))
