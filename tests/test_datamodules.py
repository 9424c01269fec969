"""Tests of the in-memory data modules, their loaders and the batched augmentation."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import DistributedSampler

from datamodules import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, InMemoryImageDataModule
from datamodules import cifar as cifar_module
from datamodules.augment import normalize, random_crop, random_horizontal_flip, resize
from datamodules.base import pass_through_collate
from tests.cifar_files import write_fake_cifar

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _cifar10(root: Path, **kwargs: object) -> CIFAR10DataModule:
    options = {"data_dir": str(root), "verify_checksums": False, "num_workers": 0, "batch_size": 8}
    options.update(kwargs)
    module = CIFAR10DataModule(**options)
    module.setup("fit")
    return module


def _rows_by_bytes(images: np.ndarray, labels: np.ndarray) -> dict[bytes, int]:
    return {image.tobytes(): int(label) for image, label in zip(images, labels)}


# --- CIFAR loading -------------------------------------------------------------------------------


def test_cifar10_loads_the_on_disk_format_with_a_seeded_split(tmp_path: Path) -> None:
    written = write_fake_cifar(tmp_path, "cifar10", n_train=50, n_test=20, seed=1)
    module = _cifar10(tmp_path, val_split=0.1)

    assert module.num_classes == 10 and module.mean == CIFAR10_MEAN and module.std == CIFAR10_STD
    assert (len(module.train_data), len(module.val_data), len(module.test_data)) == (45, 5, 20)
    for split in (module.train_data, module.val_data, module.test_data):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64
    assert torch.equal(module.test_data.images, torch.from_numpy(written.test_images))
    assert torch.equal(module.test_data.labels, torch.from_numpy(written.test_labels))
    # Train and validation partition the written training set, every image with its own label.
    expected = _rows_by_bytes(written.train_images, written.train_labels)
    loaded = [
        (image.numpy().tobytes(), int(label))
        for split in (module.train_data, module.val_data)
        for image, label in zip(split.images, split.labels)
    ]
    assert len({key for key, _ in loaded}) == 50
    assert all(expected[key] == label for key, label in loaded)


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    written = write_fake_cifar(tmp_path, "cifar100", n_train=40, n_test=10, seed=2)
    module = CIFAR100DataModule(
        data_dir=str(tmp_path), verify_checksums=False, val_split=0.0, validate_on_test=True, num_workers=0
    )
    module.setup("test")

    assert module.num_classes == 100
    assert module.mean == (0.5071, 0.4865, 0.4409) and module.std == (0.2673, 0.2564, 0.2762)
    assert torch.equal(module.train_data.images, torch.from_numpy(written.train_images))
    assert torch.equal(module.train_data.labels, torch.from_numpy(written.train_labels))
    assert module.val_data is module.test_data, "val_split=0.0 must validate on the test set"
    assert int(written.train_labels.max()) >= 10, "fixture should use labels beyond CIFAR-10's range"


def test_validation_split_is_determined_by_the_seed(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=60, n_test=5)
    first = _cifar10(tmp_path, val_split=0.25, seed=3)
    again = _cifar10(tmp_path, val_split=0.25, seed=3)
    other = _cifar10(tmp_path, val_split=0.25, seed=4)

    assert len(first.val_data) == 15
    assert torch.equal(first.val_data.images, again.val_data.images)
    assert torch.equal(first.train_data.labels, again.train_data.labels)
    assert not torch.equal(first.val_data.images, other.val_data.images)


def test_num_classes_is_known_before_setup_and_without_files(tmp_path: Path) -> None:
    assert CIFAR10DataModule(data_dir=str(tmp_path / "nowhere")).num_classes == 10
    assert CIFAR100DataModule(data_dir=str(tmp_path / "nowhere")).num_classes == 100


def test_missing_files_offline_raise_a_clear_error(tmp_path: Path) -> None:
    module = CIFAR10DataModule(data_dir=str(tmp_path), download=False)
    module.prepare_data()
    with pytest.raises(FileNotFoundError) as raised:
        module.setup("fit")
    message = str(raised.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    for name in ("data_batch_1", "data_batch_5", "test_batch"):
        assert name in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "download: true" in message and "extract" in message


def test_missing_cifar100_names_its_own_files_and_url(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python\.tar\.gz") as raised:
        CIFAR100DataModule(data_dir=str(tmp_path)).setup("fit")
    assert "train, test" in str(raised.value)


def test_failed_download_says_there_may_be_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(cifar_module.torchvision_dataset_utils, "download_and_extract_archive", offline)
    module = CIFAR10DataModule(data_dir=str(tmp_path), download=True)
    with pytest.raises(ConnectionError, match="no network") as raised:
        module.prepare_data()
    assert str(tmp_path) in str(raised.value) and "cifar-10-python.tar.gz" in str(raised.value)


def test_prepare_data_skips_the_download_when_files_are_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    calls = []
    monkeypatch.setattr(
        cifar_module.torchvision_dataset_utils, "download_and_extract_archive", lambda *a, **k: calls.append(a)
    )
    CIFAR10DataModule(data_dir=str(tmp_path), download=True, verify_checksums=False).prepare_data()
    assert calls == []
    CIFAR10DataModule(data_dir=str(tmp_path), download=True, verify_checksums=True).prepare_data()
    assert len(calls) == 1, "files failing their checksum must be downloaded again"


def test_default_checksum_verification_rejects_synthetic_files(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    module = CIFAR10DataModule(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="verify_checksums: false") as raised:
        module.setup("fit")
    message = str(raised.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert "c99cafc152244af753f735de768cd75f" in message


def test_bad_structure_is_reported_with_the_file(tmp_path: Path) -> None:
    written = write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=5)
    with open(written.directory / "test_batch", "wb") as file:
        pickle.dump({"data": np.zeros((5, 100), dtype=np.uint8), "labels": [0] * 5}, file)
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array of shape N x 3072"):
        _cifar10(tmp_path)

    with open(written.directory / "test_batch", "wb") as file:
        pickle.dump({"data": np.zeros((5, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3, 10]}, file)
    with pytest.raises(ValueError, match=r"must lie in 0\.\.9"):
        _cifar10(tmp_path)

    with open(written.directory / "test_batch", "wb") as file:
        pickle.dump({"data": np.zeros((5, 3072), dtype=np.uint8)}, file)
    with pytest.raises(ValueError, match="keys 'data' and 'labels'"):
        _cifar10(tmp_path)


@pytest.mark.parametrize(
    ("arguments", "error", "pattern"),
    [
        ({"batch_size": 0}, ValueError, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": "64"}, TypeError, "batch_size must be an integer >= 1"),
        ({"num_workers": -1}, ValueError, "num_workers must be an integer >= 0"),
        ({"val_split": 1.0}, ValueError, r"val_split must be a number in \[0, 1\)"),
        ({"image_size": 0}, ValueError, "image_size must be an integer >= 1"),
    ],
)
def test_bad_arguments_raise_clear_errors(
    tmp_path: Path, arguments: dict[str, object], error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        CIFAR10DataModule(data_dir=str(tmp_path), **arguments)


def test_digits_rejects_a_zero_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        DigitsDataModule(batch_size=0)


# --- loaders and batch transform -----------------------------------------------------------------


def test_loaders_yield_uint8_batches_and_evaluation_transform_normalises(tmp_path: Path) -> None:
    written = write_fake_cifar(tmp_path, "cifar10", n_train=20, n_test=12)
    module = _cifar10(tmp_path, val_split=0.0, validate_on_test=True, batch_size=5)

    train_batches = list(module.train_dataloader())
    assert [len(labels) for _, labels in train_batches] == [5, 5, 5, 5]
    assert sorted(torch.cat([labels for _, labels in train_batches]).tolist()) == sorted(written.train_labels.tolist())
    images, labels = next(iter(module.test_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32) and labels.dtype == torch.int64
    assert torch.equal(images, torch.from_numpy(written.test_images[:5]))
    assert [len(labels) for _, labels in module.predict_dataloader()] == [5, 5, 2]

    normalised, same_labels = module.transform_batch((images, labels), train=False)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    assert normalised.dtype == torch.float32 and same_labels is labels
    torch.testing.assert_close(normalised, (images.float() / 255 - mean) / std)


def test_training_transform_crops_and_flips_within_the_padded_image(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=64, n_test=4)
    module = _cifar10(tmp_path, val_split=0.0, validate_on_test=True)
    images = module.train_data.images
    torch.manual_seed(0)
    augmented, _ = module.transform_batch((images, module.train_data.labels), train=True)
    restored = augmented * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    restored = (restored * 255).round().to(torch.uint8)
    padded = F.pad(images, (4, 4, 4, 4))
    flipped = 0
    for index in range(len(images)):
        windows = [padded[index, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(restored[index], window) for window in windows)
        mirrored = any(torch.equal(restored[index], window.flip(-1)) for window in windows)
        assert plain or mirrored, f"image {index} is not a (flipped) window of the padded input"
        flipped += mirrored and not plain
    assert 0 < flipped < len(images)


def test_image_size_224_resizes_after_normalising(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=4)
    module = _cifar10(tmp_path, image_size=224)
    images, labels = next(iter(module.test_dataloader()))
    evaluated, _ = module.transform_batch((images, labels), train=False)
    assert evaluated.shape == (4, 3, 224, 224) and evaluated.dtype == torch.float32
    expected = F.interpolate(
        normalize(images, CIFAR10_MEAN, CIFAR10_STD), size=(224, 224), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(evaluated, expected)
    trained, _ = module.transform_batch((images, labels), train=True)
    assert trained.shape == (4, 3, 224, 224)


def test_loader_without_setup_says_to_call_setup(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        CIFAR10DataModule(data_dir=str(tmp_path)).train_dataloader()


def test_worker_processes_return_the_same_batches(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=10, n_test=16)
    in_process = _cifar10(tmp_path, batch_size=4, num_workers=0)
    with_workers = _cifar10(tmp_path, batch_size=4, num_workers=1)
    assert pickle.loads(pickle.dumps(pass_through_collate)) is pass_through_collate
    expected = list(in_process.test_dataloader())
    received = list(with_workers.test_dataloader())
    assert len(received) == len(expected) == 4
    for (images, labels), (expected_images, expected_labels) in zip(received, expected):
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_lightning_can_inject_a_distributed_sampler(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10", n_train=40, n_test=4)
    module = _cifar10(tmp_path, val_split=0.0, validate_on_test=True, batch_size=6)
    loader = module.train_dataloader()
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        sharded = _update_dataloader(loader, sampler)
        assert sharded.batch_size == 6 and sharded.collate_fn is pass_through_collate
        shards.append(torch.cat([images for images, _ in sharded]))
    assert len(shards[0]) == len(shards[1]) == 20
    seen = {image.numpy().tobytes() for shard in shards for image in shard}
    assert len(seen) == 40, "the two ranks must see disjoint halves of the training set"


# --- augmentation functions ----------------------------------------------------------------------


def test_random_crop_without_padding_is_the_identity() -> None:
    images = torch.randint(0, 256, (8, 3, 6, 5), dtype=torch.uint8)
    assert torch.equal(random_crop(images, 0), images)


def test_random_crop_takes_one_window_of_the_zero_padded_image() -> None:
    torch.manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 7, 5), dtype=torch.uint8)
    padding = 2
    cropped = random_crop(images, padding, generator=torch.Generator().manual_seed(5))
    padded = F.pad(images, (padding,) * 4)
    offsets = set()
    for index in range(len(images)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(cropped[index], padded[index, :, dy : dy + 7, dx : dx + 5])
        ]
        assert len(matches) == 1, f"image {index}: crop is not exactly one window of the padded image"
        offsets.add(matches[0])
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == set(range(2 * padding + 1)), (
        "every shift from -padding to +padding must occur in each direction"
    )
    again = random_crop(images, padding, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, cropped), "the same generator seed must give the same crops"


def test_random_crop_rejects_negative_padding() -> None:
    with pytest.raises(ValueError, match="padding must be an int >= 0"):
        random_crop(torch.zeros(1, 3, 4, 4), -1)


def test_random_horizontal_flip_flips_exactly_about_half() -> None:
    images = torch.randint(0, 256, (200, 3, 4, 6), dtype=torch.uint8)
    flipped = random_horizontal_flip(images, generator=torch.Generator().manual_seed(0))
    mirrored = torch.tensor([torch.equal(out, image.flip(-1)) for out, image in zip(flipped, images)])
    unchanged = torch.tensor([torch.equal(out, image) for out, image in zip(flipped, images)])
    assert bool((mirrored | unchanged).all())
    assert 60 < int(mirrored.sum()) < 140
    as_float = random_horizontal_flip(images.float(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(as_float, flipped.float()), "float batches must be flipped exactly like uint8 ones"


def test_normalize_matches_the_formula_and_needs_uint8() -> None:
    images = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    result = normalize(images, mean, std)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, expected)
    torch.testing.assert_close(normalize(images, torch.tensor(mean), torch.tensor(std)), expected)
    with pytest.raises(TypeError, match="uint8"):
        normalize(images.float(), mean, std)
    with pytest.raises(ValueError, match="one entry per channel"):
        normalize(images, (0.5,), (0.2,))


def test_resize_is_bilinear_and_keeps_the_dtype() -> None:
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    as_float = resize(images.float(), 20)
    assert as_float.shape == (2, 3, 20, 20)
    torch.testing.assert_close(
        as_float, F.interpolate(images.float(), size=(20, 20), mode="bilinear", align_corners=False)
    )
    as_uint8 = resize(images, (12, 16))
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (2, 3, 12, 16)
    constant = torch.full((1, 3, 4, 4), 7, dtype=torch.uint8)
    assert torch.equal(resize(constant, 9), torch.full((1, 3, 9, 9), 7, dtype=torch.uint8))
    with pytest.raises(TypeError, match="size must be an int"):
        resize(images, "big")


# --- digits --------------------------------------------------------------------------------------


def test_digits_module_splits_and_shapes() -> None:
    module = DigitsDataModule(batch_size=32)
    assert isinstance(module, InMemoryImageDataModule) and module.num_classes == 10
    assert (len(module.train_data), len(module.val_data), len(module.test_data)) == (1257, 270, 270)
    assert module.train_data.images.shape[1:] == (3, 32, 32) and module.train_data.images.dtype == torch.uint8
    assert module.horizontal_flip is False and module.crop_padding == 2
    # Stratified: every class appears in the test split in proportion (1797 images, about 180 per class).
    assert torch.bincount(module.test_data.labels, minlength=10).min() >= 25
    scaled = module.train_data.images.float() / 255
    assert module.mean == pytest.approx(tuple(scaled.mean(dim=(0, 2, 3)).tolist()))
    assert module.std == pytest.approx(tuple(scaled.std(dim=(0, 2, 3)).tolist()))
    images, labels = next(iter(module.train_dataloader()))
    assert images.shape == (32, 3, 32, 32) and labels.shape == (32,)
    model_input, _ = module.transform_batch((images, labels), train=True)
    assert model_input.dtype == torch.float32 and model_input.shape == (32, 3, 32, 32)
    assert abs(float(module.transform_batch((module.train_data.images, labels), train=False)[0].mean())) < 1e-3


def test_digits_split_follows_the_seed_and_the_images_look_like_digits() -> None:
    first, again, other = DigitsDataModule(seed=1), DigitsDataModule(seed=1), DigitsDataModule(seed=2)
    assert torch.equal(first.test_data.labels, again.test_data.labels)
    assert not torch.equal(first.test_data.images, other.test_data.images)
    images = first.train_data.images
    assert torch.equal(images[:, 0], images[:, 2]), "grey digits are replicated to 3 channels"
    assert int(images.max()) == 255 and int(images.min()) == 0
    assert len(DigitsDataModule(val_split=0.0, validate_on_test=True).val_data) == 270


def test_digits_resize_to_another_image_size() -> None:
    module = DigitsDataModule(image_size=24, batch_size=8)
    images, labels = next(iter(module.val_dataloader()))
    assert module.transform_batch((images, labels), train=False)[0].shape == (8, 3, 24, 24)


class _RecordingDigits(DigitsDataModule):
    """Digits module that records, per batch, whether the training augmentation was requested."""

    def __init__(self) -> None:
        super().__init__(batch_size=16)
        self.train_flags: list[bool] = []

    def transform_batch(
        self, batch: tuple[torch.Tensor, torch.Tensor], train: bool, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.train_flags.append(train)
        return super().transform_batch(batch, train, generator)


class _TinyClassifier(LightningModule):
    """Linear classifier that records the dtype and shape of every batch it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
        self.seen: list[tuple[str, torch.dtype, tuple[int, ...]]] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        self.seen.append(("train", images.dtype, tuple(images.shape)))
        return F.cross_entropy(self.net(images), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.seen.append(("val", images.dtype, tuple(images.shape)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_augments_training_batches_only(tmp_path: Path) -> None:
    data, model = _RecordingDigits(), _TinyClassifier()
    trainer = Trainer(
        max_steps=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        val_check_interval=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data)
    stages = [stage for stage, _, _ in model.seen]
    assert stages == ["train", "train", "train", "val", "val"]
    assert data.train_flags == [True, True, True, False, False]
    assert all(dtype == torch.float32 and shape == (16, 3, 32, 32) for _, dtype, shape in model.seen)


def test_training_order_and_augmentation_depend_only_on_seed_epoch_and_position() -> None:
    data = DigitsDataModule(batch_size=32, seed=3)
    loader = data.train_dataloader()
    loader.sampler.set_epoch(4)
    first = [labels.tolist() for _, labels in loader]
    torch.manual_seed(999)
    loader.sampler.set_epoch(4)
    assert [labels.tolist() for _, labels in loader] == first
    loader.sampler.set_epoch(5)
    assert [labels.tolist() for _, labels in loader] != first

    images, labels = next(iter(data.val_dataloader()))
    one = data.transform_batch((images, labels), train=True, generator=torch.Generator().manual_seed(1))[0]
    torch.manual_seed(12345)
    two = data.transform_batch((images, labels), train=True, generator=torch.Generator().manual_seed(1))[0]
    assert torch.equal(one, two)
