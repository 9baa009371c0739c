"""Tests for gce_core.data: the embedded digits, the real torchvision loaders on tiny fake files
in the real formats, the not-found errors, the train/val split and open-set images."""

from __future__ import annotations

import pathlib
from urllib.error import URLError

import numpy as np
import pytest
import torch
from torchvision import datasets as tv_datasets

from gce_core import data
from gce_core.data import DatasetNotFoundError, load_raw
from tests.fake_datasets import (
    patch_cifar_md5,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
)


@pytest.fixture(autouse=True)
def _empty_cache():
    load_raw.cache_clear()
    yield
    load_raw.cache_clear()


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    fake = write_cifar10(tmp_path)
    patch_cifar_md5(monkeypatch, tv_datasets.CIFAR10, fake)
    return fake


@pytest.fixture
def fake_cifar100(tmp_path, monkeypatch):
    fake = write_cifar100(tmp_path)
    patch_cifar_md5(monkeypatch, tv_datasets.CIFAR100, fake)
    return fake


def _cifar_images(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)


# --- registry -------------------------------------------------------------------------------


def test_registry_shapes_and_class_names():
    assert data.DEFAULT_DATASET == "digits"
    assert set(data.DATASETS) == {"digits", "fashion_mnist", "cifar10", "cifar100"}
    shapes = {k: (v.image_shape, v.num_classes) for k, v in data.DATASETS.items()}
    assert shapes == {
        "digits": ((1, 8, 8), 10),
        "fashion_mnist": ((1, 28, 28), 10),
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
    }
    for info in data.DATASETS.values():
        assert len(info.class_names) == info.num_classes, info.name
        assert info.embedded == (info.name == "digits")
    fine = data.DATASETS["cifar100"].class_names
    assert list(fine) == sorted(fine) and len(set(fine)) == 100
    assert fine[:3] == ("apple", "aquarium_fish", "baby") and fine[-1] == "worm"
    assert data.DATASETS["cifar10"].class_names[3] == "cat"


def test_unknown_name_lists_allowed_names():
    with pytest.raises(ValueError, match="unknown data set 'mnist'") as err:
        data.dataset_info("mnist")
    for name in ("digits", "fashion_mnist", "cifar10", "cifar100"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="allowed: digits"):
        load_raw("imagenet")


def test_default_data_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("GCE_LAB_DATA", str(tmp_path / "d"))
    assert data.default_data_root() == tmp_path / "d"
    monkeypatch.delenv("GCE_LAB_DATA")
    assert data.default_data_root() == pathlib.Path.home() / ".gce_lab" / "data"


# --- digits ---------------------------------------------------------------------------------


def test_digits_shapes_values_and_stratified_fixed_split():
    raw = load_raw("digits")
    assert raw.info is data.DATASETS["digits"]
    assert raw.x_train.shape == (1797 - 360, 1, 8, 8) and raw.x_test.shape == (360, 1, 8, 8)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert raw.y_train.shape == (1437,) and raw.y_test.shape == (360,)
    for x in (raw.x_train, raw.x_test):
        assert x.min().item() == 0.0 and x.max().item() == 1.0
    counts = torch.bincount(raw.y_test, minlength=10)
    assert counts.min().item() >= 34 and counts.max().item() <= 38, counts
    # the split does not depend on the cache or on global random state
    load_raw.cache_clear()
    torch.manual_seed(123)
    np.random.seed(123)
    again = load_raw("digits")
    assert again is not raw
    assert torch.equal(again.x_test, raw.x_test) and torch.equal(again.y_test, raw.y_test)
    assert torch.equal(again.x_train, raw.x_train)


def test_digits_split_is_a_partition_of_the_images():
    from sklearn.datasets import load_digits

    raw = load_raw("digits")
    every = torch.from_numpy(load_digits().data).float() / 16
    both = torch.cat([raw.x_train, raw.x_test]).flatten(1)
    assert torch.equal(torch.sort(both, dim=0).values, torch.sort(every, dim=0).values)


def test_cache_returns_same_tensors_until_cleared():
    first = load_raw("digits")
    assert load_raw("digits", root="/somewhere/ignored") is first
    load_raw.cache_clear()
    assert load_raw("digits") is not first


# --- real torchvision loaders on fake files ------------------------------------------------


def test_cifar10_pixels_labels_and_channel_order(tmp_path, monkeypatch):
    def mark(rows: np.ndarray) -> None:
        # image 0: constant R, G, B planes; image 1: one marked pixel (row 2, col 5) in blue
        rows[0] = np.concatenate([np.full(1024, 255), np.zeros(1024), np.full(1024, 51)])
        rows[1, 2 * 1024 + 2 * 32 + 5] = 204
        rows[1, 2 * 1024 + 5 * 32 + 2] = 0

    fake = write_cifar10(tmp_path, per_batch=2, n_test=3, edit_train=mark)
    patch_cifar_md5(monkeypatch, tv_datasets.CIFAR10, fake)

    raw = load_raw("cifar10", root=tmp_path)
    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (3, 3, 32, 32)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert raw.x_train.is_contiguous()
    assert torch.all(raw.x_train[0, 0] == 1.0) and torch.all(raw.x_train[0, 1] == 0.0)
    assert torch.allclose(raw.x_train[0, 2], torch.full((32, 32), 0.2))
    assert raw.x_train[1, 2, 2, 5].item() == pytest.approx(0.8)
    assert raw.x_train[1, 2, 5, 2].item() == 0.0
    assert torch.equal(raw.x_train, _cifar_images(fake.x_train))
    assert torch.equal(raw.x_test, _cifar_images(fake.x_test))
    assert raw.y_train.tolist() == fake.y_train.tolist()
    assert raw.y_test.tolist() == fake.y_test.tolist()


def test_cifar100_fine_labels_and_pixels(tmp_path, fake_cifar100):
    raw = load_raw("cifar100", root=tmp_path)
    assert raw.info.num_classes == 100
    assert raw.x_train.shape == (4, 3, 32, 32) and raw.x_test.shape == (2, 3, 32, 32)
    assert torch.equal(raw.x_train, _cifar_images(fake_cifar100.x_train))
    assert torch.equal(raw.x_test, _cifar_images(fake_cifar100.x_test))
    assert raw.y_train.tolist() == fake_cifar100.y_train.tolist()
    assert raw.y_test.dtype == torch.int64 and raw.y_test.tolist() == fake_cifar100.y_test.tolist()


def test_fashion_mnist_idx_files(tmp_path):
    fake = write_fashion_mnist(tmp_path, n_train=5, n_test=3)
    raw = load_raw("fashion_mnist", root=tmp_path)
    assert raw.x_train.shape == (5, 1, 28, 28) and raw.x_test.shape == (3, 1, 28, 28)
    assert raw.x_train.dtype == torch.float32 and raw.y_test.dtype == torch.int64
    expected = torch.from_numpy(fake.x_train.astype(np.float32) / 255.0).unsqueeze(1)
    assert torch.equal(raw.x_train, expected)
    assert raw.x_test[2, 0, 3, 7].item() == pytest.approx(fake.x_test[2, 3, 7] / 255.0)
    assert raw.y_train.tolist() == fake.y_train.tolist()
    assert raw.y_test.tolist() == fake.y_test.tolist()


def test_cache_is_keyed_on_resolved_root(tmp_path, fake_cifar10):
    first = load_raw("cifar10", root=tmp_path)
    assert load_raw("cifar10", root=str(tmp_path / "x" / "..")) is first
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert load_raw("cifar10", root=tmp_path) is first  # read once per process
    load_raw.cache_clear()
    with pytest.raises(DatasetNotFoundError):
        load_raw("cifar10", root=tmp_path)


# --- not found, corrupted, download ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
     ("fashion_mnist", "FashionMNIST/raw")],
)  # fmt: skip
def test_missing_data_set_says_where_and_how(tmp_path, name, folder):
    with pytest.raises(DatasetNotFoundError) as err:
        load_raw(name, root=tmp_path / "empty")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str((tmp_path / "empty").resolve()) in message
    assert f"python -m gce_core train --dataset {name} --download" in message
    assert folder in message
    assert err.value.__suppress_context__  # no torchvision traceback chained


def test_missing_data_set_uses_env_root(tmp_path, monkeypatch):
    monkeypatch.setenv("GCE_LAB_DATA", str(tmp_path / "env_root"))
    with pytest.raises(DatasetNotFoundError, match="env_root"):
        load_raw("cifar100")


def test_corrupted_cifar_file_fails_the_real_md5_check(tmp_path, fake_cifar10):
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "ab") as f:
        f.write(b"\0")
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        load_raw("cifar10", root=tmp_path)


def test_download_true_fetches_then_loads(tmp_path, monkeypatch):
    calls = []

    def fake_download(self):  # stands in for torchvision's network download
        calls.append(self.root)
        fake = write_cifar10(pathlib.Path(self.root))
        patch_cifar_md5(monkeypatch, tv_datasets.CIFAR10, fake)

    monkeypatch.setattr(tv_datasets.CIFAR10, "download", fake_download)
    with pytest.raises(DatasetNotFoundError):
        load_raw("cifar10", root=tmp_path)
    assert calls == []  # download=False never downloads
    raw = load_raw("cifar10", root=tmp_path, download=True)
    assert len(calls) == 1 and raw.x_train.shape == (10, 3, 32, 32)


def test_failed_download_is_a_not_found_error(tmp_path, monkeypatch):
    def offline(self):
        raise URLError("no network")

    monkeypatch.setattr(tv_datasets.CIFAR100, "download", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed") as err:
        load_raw("cifar100", root=tmp_path, download=True)
    assert "cifar-100-python" in str(err.value)


# --- open-set images ------------------------------------------------------------------------


def test_noise_images_reproducible_and_shaped():
    a = data.open_set_images("digits", "noise", count=7, seed=3)
    b = data.open_set_images("digits", "noise", count=7, seed=3)
    c = data.open_set_images("digits", "noise", count=7, seed=4)
    assert a.shape == (7, 1, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() < 1
    assert data.open_set_images("cifar100", "noise", count=2, seed=0).shape == (2, 3, 32, 32)


def test_open_set_shape_mismatch_and_bad_source_raise():
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*\(1, 8, 8\)"):
        data.open_set_images("digits", "cifar100", count=1, seed=0)
    with pytest.raises(ValueError, match=r"\(3, 32, 32\).*\(1, 28, 28\)"):
        data.open_set_images("fashion_mnist", "cifar10", count=1, seed=0)
    with pytest.raises(ValueError, match="allowed: cifar100, cifar10, noise"):
        data.open_set_images("cifar10", "svhn", count=1, seed=0)
    with pytest.raises(ValueError, match="must differ"):
        data.open_set_images("cifar10", "cifar10", count=1, seed=0)


def test_open_set_from_cifar100_draws_distinct_source_images(tmp_path, fake_cifar100):
    source = _cifar_images(fake_cifar100.x_train)
    picked = data.open_set_images("cifar10", "cifar100", count=3, seed=5, root=tmp_path)
    again = data.open_set_images("cifar10", "cifar100", count=3, seed=5, root=tmp_path)
    assert picked.shape == (3, 3, 32, 32) and torch.equal(picked, again)
    rows = [int(torch.nonzero((source == img).flatten(1).all(1))[0]) for img in picked]
    assert len(set(rows)) == 3
    picked[:] = 0  # a copy: the cached source is untouched
    assert torch.equal(load_raw("cifar100", root=tmp_path).x_train, source)
    with pytest.raises(ValueError, match="exceeds"):
        data.open_set_images("cifar10", "cifar100", count=5, seed=0, root=tmp_path)


def test_open_set_source(tmp_path, fake_cifar100):
    assert data.open_set_source("digits") is None
    assert data.open_set_source("fashion_mnist") is None
    images = data.open_set_source("cifar10", root=tmp_path)
    assert torch.equal(images, _cifar_images(fake_cifar100.x_train))
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        data.open_set_source("cifar100", root=tmp_path)


# --- split and mean -------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "fraction", "n_val"), [(100, 0.1, 10), (45, 0.5, 22), (7, 0.0, 0)])
def test_split_train_val_partition(n, fraction, n_val):
    train, val = data.split_train_val(n, fraction, seed=1)
    assert train.dtype == torch.int64 and val.dtype == torch.int64
    assert len(val) == n_val == round(fraction * n) and len(train) == n - n_val
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(n))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)


def test_split_train_val_seeded():
    a = data.split_train_val(1000, 0.1, seed=0)
    b = data.split_train_val(1000, 0.1, seed=0)
    c = data.split_train_val(1000, 0.1, seed=1)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    assert not torch.equal(a[1], c[1])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    data.split_train_val(1000, 0.1, seed=2)
    assert torch.equal(torch.get_rng_state(), state)  # global random state untouched


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0])
def test_split_train_val_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match=r"\[0, 0.5\]"):
        data.split_train_val(10, fraction, seed=0)


def test_pixel_mean():
    x = torch.stack([torch.zeros(3, 4, 5), torch.ones(3, 4, 5), torch.full((3, 4, 5), 5.0)])
    x[0, 1, 2, 3] = 3.0
    mean = data.pixel_mean(x)
    assert mean.shape == (3, 4, 5)
    assert mean[0, 0, 0].item() == 2.0 and mean[1, 2, 3].item() == 3.0
    with pytest.raises(ValueError, match="N, C, H, W"):
        data.pixel_mean(torch.zeros(3, 4, 5))


def test_digits_read_without_sklearn_import_equal_sklearn_images():
    from sklearn.datasets import load_digits

    from gce_core.data import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, stratified_split

    ref = load_digits()
    y = torch.from_numpy(ref.target).long()
    train_idx, test_idx = stratified_split(y, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    raw = load_raw("digits")
    images = torch.from_numpy(ref.images).float().div(16).unsqueeze(1)
    assert torch.equal(raw.x_test, images[test_idx]) and torch.equal(raw.y_test, y[test_idx])
    assert torch.equal(raw.x_train, images[train_idx]) and torch.equal(raw.y_train, y[train_idx])


def test_stratified_split_shares_and_seed():
    from gce_core.data import stratified_split

    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    train, test = stratified_split(labels, 10, seed=3)
    assert labels[test].bincount().tolist() == [5, 3, 2]
    assert len(set(train.tolist()) | set(test.tolist())) == 100 and len(train) == 90
    assert torch.equal(test, stratified_split(labels, 10, seed=3)[1])
    assert not torch.equal(test, stratified_split(labels, 10, seed=4)[1])
