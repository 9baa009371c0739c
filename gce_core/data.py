"""Data sets as whole tensors: images (N, C, H, W) float32 in [0, 1] and labels (N,) int64.

``digits`` (scikit-learn's 8x8 digits) ships with scikit-learn and is the default; Fashion-MNIST,
CIFAR-10 and CIFAR-100 are read through torchvision from a local data folder and are downloaded
only when asked (``download=True``). Each data set is read once per process and kept in memory,
so a training run slices batches out of tensors instead of going through a DataLoader.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
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
    "fashion_mnist": ("noise",),
    "cifar10": ("cifar100", "noise"),
    "cifar100": ("cifar10", "noise"),
}

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0  # fixed, independent of any run seed: every run shares one test set


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are missing or corrupted; the message says where and how to get them."""


@dataclass(frozen=True)
class RawData:
    """A data set's train and test splits: images (N, C, H, W) float32 in [0, 1], labels (N,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    info: DatasetInfo


def default_data_root() -> pathlib.Path:
    """The data folder: ``$GCE_LAB_DATA`` if set, else ``~/.gce_lab/data``."""
    env = os.environ.get("GCE_LAB_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".gce_lab" / "data"


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``: one of "digits", "fashion_mnist", "cifar10", "cifar100"."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(DATASETS)
        raise ValueError(f"unknown data set {name!r}; allowed: {allowed}") from None


def load_raw(name: str, root: str | os.PathLike | None = None, download: bool = False) -> RawData:
    """Load data set ``name`` ("digits", "fashion_mnist", "cifar10" or "cifar100") as tensors.

    ``root`` is the data folder (default :func:`default_data_root`; ignored for digits). With
    ``download=True`` a missing data set is fetched by torchvision first (needs internet).
    Results are cached per (name, resolved root) for the life of the process, so every call
    returns the SAME tensors: callers must not modify them in place. ``load_raw.cache_clear()``
    empties the cache. Raises :class:`DatasetNotFoundError` when the files are missing or corrupted.
    """
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


load_raw.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]


def _resolve_root(root: str | os.PathLike | None) -> pathlib.Path:
    return pathlib.Path(root or default_data_root()).expanduser().resolve()


def _to_unit_float(x_uint8: torch.Tensor) -> torch.Tensor:
    return x_uint8.contiguous().to(torch.float32).div_(255.0)


def _digits_file() -> pathlib.Path:
    """scikit-learn's bundled digits.csv.gz, found without importing scikit-learn (~1.3 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError("digits ships with scikit-learn: pip install scikit-learn")
    return pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


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
    info = dataset_info(name)
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


def open_set_source(
    name: str, root: str | os.PathLike | None = None, download: bool = False
) -> torch.Tensor | None:
    """Natural images (N, C, H, W) in [0, 1] usable as open-set noise for data set ``name``.

    cifar10 -> CIFAR-100 training images; cifar100 -> CIFAR-10 training images; None for data sets
    with no natural source (digits, fashion_mnist), which use "noise" (see :func:`open_set_images`).
    The tensor is the cached one of :func:`load_raw`: do not modify it in place.
    """
    natural = [s for s in OPEN_SET_SOURCES[dataset_info(name).name] if s != "noise"]
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
    info = dataset_info(target)
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
