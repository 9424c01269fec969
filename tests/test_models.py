"""Tests for the model registry, the model definitions and strict checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from lit_prune.models import (
    BasicBlock,
    create_model,
    list_models,
    load_state_dict_checked,
    read_state_dict,
    register_model,
    registry,
)

SHIPPED_MODELS = [
    "resnet18", "resnet20", "resnet32", "resnet44", "resnet56",
    "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "vit_tiny",
]  # fmt: skip
BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
VGG16_CONV_INDICES = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{entry}" for entry in BN_ENTRIES]


def _expected_cifar_resnet_keys(blocks_per_stage: int) -> list[str]:
    """The key order of the pretrained CIFAR ResNet checkpoints (chenyaofo/pytorch-cifar-models)."""
    keys = ["conv1.weight", *_bn_keys("bn1")]
    for stage in (1, 2, 3):
        for block in range(blocks_per_stage):
            prefix = f"layer{stage}.{block}"
            keys += [f"{prefix}.conv1.weight", *_bn_keys(f"{prefix}.bn1")]
            keys += [f"{prefix}.conv2.weight", *_bn_keys(f"{prefix}.bn2")]
            if stage > 1 and block == 0:
                keys += [f"{prefix}.downsample.0.weight", *_bn_keys(f"{prefix}.downsample.1")]
    return [*keys, "fc.weight", "fc.bias"]


def _expected_vgg16_bn_keys() -> list[str]:
    keys = []
    for index in VGG16_CONV_INDICES:
        keys += [f"features.{index}.weight", f"features.{index}.bias"]
        keys += _bn_keys(f"features.{index + 1}")
    for index in (0, 3, 6):
        keys += [f"classifier.{index}.weight", f"classifier.{index}.bias"]
    return keys


def _num_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _assert_same_state(actual: nn.Module, expected: nn.Module) -> None:
    actual_state, expected_state = actual.state_dict(), expected.state_dict()
    assert list(actual_state) == list(expected_state)
    for key, value in expected_state.items():
        assert torch.equal(actual_state[key], value), key


def test_list_models_is_sorted_and_holds_the_shipped_models():
    assert list_models() == sorted(list_models())
    assert set(SHIPPED_MODELS) <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward_at_natural_size(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    images = torch.randn(2, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (2, 7)
    logits.square().mean().backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
    assert any(parameter.grad.abs().sum() > 0 for parameter in model.parameters())


def test_vit_tiny_at_224_pixels_uses_16_pixel_patches():
    torch.manual_seed(0)
    model = create_model("vit_tiny", num_classes=5, image_size=224).eval()
    assert model.patch_embed.proj.kernel_size == (16, 16)
    assert model.pos_embed.shape == (1, 14 * 14 + 1, 192)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 5)


def test_vit_tiny_dimensions_and_cifar_geometry():
    model = create_model("vit_tiny", drop_path_rate=0.1)
    assert model.embed_dim == 192
    assert len(model.blocks) == 12
    assert all(block.attn.num_heads == 3 for block in model.blocks)
    assert model.patch_embed.proj.kernel_size == (4, 4)
    assert model.pos_embed.shape == (1, 8 * 8 + 1, 192)
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"image_size": 30, "patch_size": 4}, "multiple of patch_size"),
        ({"patch_size": 0}, "patch_size must be a positive int"),
        ({"image_size": -1}, "image_size must be a positive int"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate must be in \[0, 1\)"),
    ],
)
def test_vit_tiny_rejects_bad_geometry(options, message):
    with pytest.raises(ValueError, match=message):
        create_model("vit_tiny", **options)


def test_resnet20_matches_pretrained_cifar_layout():
    model = create_model("resnet20")
    state = model.state_dict()
    assert list(state) == _expected_cifar_resnet_keys(3)
    assert len(state) == 128
    assert _num_parameters(model) == 272_474
    expected_shapes = {
        "conv1.weight": (16, 3, 3, 3),
        "layer1.0.conv1.weight": (16, 16, 3, 3),
        "layer2.0.conv1.weight": (32, 16, 3, 3),
        "layer2.0.downsample.0.weight": (32, 16, 1, 1),
        "layer2.0.downsample.1.running_var": (32,),
        "layer3.0.downsample.0.weight": (64, 32, 1, 1),
        "layer3.2.conv2.weight": (64, 64, 3, 3),
        "fc.weight": (10, 64),
        "fc.bias": (10,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert model.layer2[0].downsample[0].stride == (2, 2)
    assert all(module.bias is None for module in model.modules() if isinstance(module, nn.Conv2d))


@pytest.mark.parametrize(
    ("name", "blocks", "parameters"), [("resnet32", 5, 466_906), ("resnet44", 7, 661_338), ("resnet56", 9, 855_770)]
)
def test_deeper_cifar_resnets_match_layout(name, blocks, parameters):
    model = create_model(name)
    assert list(model.state_dict()) == _expected_cifar_resnet_keys(blocks)
    assert _num_parameters(model) == parameters


def test_cifar_resnet_blocks_are_plain_navigable_modules():
    model = create_model("resnet20")
    first, projected = model.layer1[0], model.layer2[0]
    assert isinstance(first, BasicBlock) and isinstance(projected, BasicBlock)
    assert first.downsample is None
    assert isinstance(projected.downsample, nn.Sequential)
    for attribute in ("conv1", "bn1", "relu", "conv2", "bn2"):
        assert isinstance(getattr(projected, attribute), nn.Module)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)


def test_cifar_resnet_initialisation():
    torch.manual_seed(0)
    model = create_model("resnet56")
    conv = model.layer3[0].conv2
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


def test_vgg16_bn_matches_pretrained_cifar_layout():
    model = create_model("vgg16_bn", num_classes=100)
    state = model.state_dict()
    assert list(state) == _expected_vgg16_bn_keys()
    assert len(state) == 97
    assert _num_parameters(model) == 15_253_578 + 90 * 513
    expected_shapes = {
        "features.0.weight": (64, 3, 3, 3),
        "features.0.bias": (64,),
        "features.1.running_mean": (64,),
        "features.7.weight": (128, 64, 3, 3),
        "features.40.weight": (512, 512, 3, 3),
        "features.41.weight": (512,),
        "classifier.0.weight": (512, 512),
        "classifier.6.weight": (100, 512),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert isinstance(model.features[6], nn.MaxPool2d)
    assert [type(layer) for layer in model.classifier] == [
        nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "convolutions", "parameters"),
    [("vgg11_bn", 8, 9_756_426), ("vgg13_bn", 10, 9_941_322), ("vgg19_bn", 16, 20_565_834)],
)
def test_other_vgg_bn_match_the_published_sizes(name, convolutions, parameters):
    model = create_model(name)
    assert sum(isinstance(module, nn.Conv2d) for module in model.modules()) == convolutions
    assert _num_parameters(model) == parameters


def test_resnet18_has_cifar_stem():
    model = create_model("resnet18")
    assert model.conv1.kernel_size == (3, 3)
    assert model.conv1.stride == (1, 1)
    assert model.conv1.padding == (1, 1)
    assert model.conv1.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    assert _num_parameters(model) == 11_173_962
    feature_shapes = []
    model.layer4.register_forward_hook(lambda module, inputs, output: feature_shapes.append(output.shape))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert feature_shapes == [(1, 512, 4, 4)]


@pytest.mark.parametrize("name", list_models())
def test_saved_state_dict_reloads_strictly(name, tmp_path):
    torch.manual_seed(0)
    original = create_model(name, num_classes=3)
    path = tmp_path / "weights.pt"
    torch.save(original.state_dict(), path)
    torch.manual_seed(1)
    reloaded = create_model(name, num_classes=3, checkpoint_path=path)
    _assert_same_state(reloaded, original)


@pytest.mark.parametrize("prefix", ["network.", "model.", ""])
def test_lightning_style_checkpoint_reloads(prefix, tmp_path):
    torch.manual_seed(0)
    original = create_model("resnet20")
    path = tmp_path / "run.ckpt"
    state = {prefix + key: value for key, value in original.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    torch.manual_seed(1)
    _assert_same_state(create_model("resnet20", checkpoint_path=str(path)), original)


def test_wrong_classifier_shape_names_key_and_both_shapes(tmp_path):
    path = tmp_path / "cifar100.pt"
    torch.save(create_model("resnet20", num_classes=100).state_dict(), path)
    with pytest.raises(ValueError, match="fc.weight") as error:
        create_model("resnet20", num_classes=10, checkpoint_path=path)
    message = str(error.value)
    assert "checkpoint (100, 64) vs model (10, 64)" in message
    assert "checkpoint (100,) vs model (10,)" in message
    assert "conv1.weight" not in message


def test_missing_and_unexpected_keys_are_all_named():
    shallow, deep = create_model("resnet20"), create_model("resnet32")
    with pytest.raises(ValueError) as error:
        load_state_dict_checked(shallow, deep.state_dict())
    message = str(error.value)
    assert "unexpected keys" in message
    for block in (3, 4):
        assert f"layer3.{block}.conv2.weight" in message
    with pytest.raises(ValueError, match="missing keys.*layer1.4.bn2.running_var"):
        load_state_dict_checked(deep, shallow.state_dict())


def test_checked_load_leaves_model_untouched_on_error():
    torch.manual_seed(0)
    model = create_model("resnet20")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    bad = create_model("resnet20", num_classes=4).state_dict()
    with pytest.raises(ValueError):
        load_state_dict_checked(model, bad)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unknown_model_lists_available_names():
    with pytest.raises(ValueError, match="unknown model 'resnet21'") as error:
        create_model("resnet21")
    for name in list_models():
        assert name in str(error.value)


@pytest.mark.parametrize(
    ("num_classes", "error"), [(0, ValueError), (-3, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_bad_num_classes(num_classes, error):
    with pytest.raises(error, match="num_classes"):
        create_model("resnet20", num_classes=num_classes)


def test_unknown_option_lists_accepted_options():
    with pytest.raises(TypeError, match="does not accept.*'width'.*accepted options: \\['pretrained'\\]"):
        create_model("resnet20", width=2)
    with pytest.raises(TypeError, match="accepted options:.*image_size.*patch_size.*pretrained.*drop_path_rate"):
        create_model("vit_tiny", img_size=32)


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        read_state_dict(tmp_path / "absent.pt")
    pickled_module = tmp_path / "module.pt"
    torch.save(create_model("resnet20"), pickled_module)
    with pytest.raises(ValueError, match=r"torch.save\(model.state_dict\(\), PATH\)"):
        read_state_dict(pickled_module)
    no_tensors = tmp_path / "meta.pt"
    torch.save({"epoch": 3}, no_tensors)
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict(no_tensors)
    with pytest.raises(TypeError, match="string or os.PathLike"):
        read_state_dict(3)


def test_register_model_adds_a_buildable_model(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("tiny_linear")
    def tiny_linear(num_classes: int = 10, hidden: int = 4) -> nn.Module:
        layers = [nn.Flatten(), nn.Linear(3 * 32 * 32, hidden), nn.Linear(hidden, num_classes)]
        return nn.Sequential(*layers)

    assert "tiny_linear" in list_models()
    assert create_model("tiny_linear", num_classes=2, hidden=5)[1].out_features == 5
    with pytest.raises(ValueError, match="already registered"):
        register_model("tiny_linear")
    with pytest.raises(TypeError, match="num_classes"):
        register_model("no_classes")(lambda: nn.Identity())


@pytest.fixture(scope="module")
def imagenet_vit_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A locally saved 1000-class timm ``vit_tiny_patch16_224`` state dict."""
    torch.manual_seed(123)
    state = timm.create_model("vit_tiny_patch16_224", num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("vit") / "vit_tiny_imagenet.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("pretrained", [False, True])
def test_vit_tiny_pretrained_file_loads_backbone_with_fresh_head(imagenet_vit_file, pretrained):
    path, imagenet_state = imagenet_vit_file
    torch.manual_seed(7)
    fresh = create_model("vit_tiny", num_classes=10, image_size=224)
    torch.manual_seed(7)
    model = create_model("vit_tiny", num_classes=10, image_size=224, pretrained=pretrained, checkpoint_path=path)
    state = model.state_dict()
    assert set(state) == set(imagenet_state)
    for key, value in imagenet_state.items():
        if key.startswith("head."):
            continue
        assert torch.equal(state[key], value), key
    assert state["head.weight"].shape == (10, 192)
    assert state["head.bias"].shape == (10,)
    assert torch.equal(state["head.weight"], fresh.state_dict()["head.weight"])
    assert torch.equal(state["head.bias"], fresh.state_dict()["head.bias"])


def test_vit_tiny_pretrained_file_in_training_checkpoint_wrapper(imagenet_vit_file, tmp_path):
    _, imagenet_state = imagenet_vit_file
    path = tmp_path / "deit_style.pth"
    torch.save({"model": imagenet_state, "epoch": 300}, path)
    model = create_model("vit_tiny", num_classes=100, image_size=224, checkpoint_path=path)
    key = "blocks.11.mlp.fc2.weight"
    assert torch.equal(model.state_dict()[key], imagenet_state[key])
    assert model.head.out_features == 100


def test_vit_tiny_pretrained_file_needs_native_geometry(imagenet_vit_file):
    path, _ = imagenet_vit_file
    expected = "image_size=224 and patch_size=16.*got image_size=32 and patch_size=4"
    with pytest.raises(ValueError, match=expected):
        create_model("vit_tiny", num_classes=10, checkpoint_path=path)


def test_vit_tiny_pretrained_download_needs_native_geometry():
    with pytest.raises(ValueError, match="need image_size=224 and patch_size=16"):
        create_model("vit_tiny", pretrained=True)


def test_vit_tiny_offline_download_suggests_checkpoint_path(monkeypatch):
    def offline_create_model(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return original_create_model(*args, **kwargs)

    original_create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline_create_model)
    with pytest.raises(ConnectionError, match="offline.*checkpoint_path=FILE"):
        create_model("vit_tiny", image_size=224, pretrained=True)


def test_timm_models_by_name_get_the_class_count():
    model = create_model("timm:resnet10t", num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    with pytest.raises(ValueError, match="timm has no model 'resnet10x'"):
        create_model("timm:resnet10x")


def test_unknown_model_points_to_class_path_and_timm():
    with pytest.raises(ValueError, match="class_path") as error:
        create_model("torchvision.models.mobilenet_v3_small")
    assert "timm:NAME" in str(error.value)
