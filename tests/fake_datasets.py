"""Tiny data sets written in the REAL on-disk formats that torchvision reads.

- CIFAR-10 / CIFAR-100: Python 2 pickles, as distributed (keys and raw array bytes are Python 2
  ``str``, so ``pickle.load(f, encoding="bytes")`` gives ``b"data"`` keys, and torchvision's
  ``encoding="latin1"`` gives ``"data"``); images are uint8 rows of 3072 values, three 32x32
  row-major planes R, G, B.
- Fashion-MNIST: uncompressed IDX files (big-endian magic 2051 for images, 2049 for labels).

torchvision checks the CIFAR files by MD5; :func:`patch_cifar_md5` points its class attributes at
the MD5s of the tiny files so the real loader and its real integrity check run in tests.
"""

from __future__ import annotations

import hashlib
import pathlib
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from gce_core.data import DATASETS


class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` as Python 2 ``str`` (BINSTRING), like the CIFAR files."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _write_py2_pickle(path: pathlib.Path, obj: dict) -> str:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)
    return hashlib.md5(path.read_bytes()).hexdigest()


@dataclass
class FakeCifar:
    """What was written: uint8 rows (n, 3072) and labels per split, and file name -> MD5."""

    folder: pathlib.Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    md5: dict[str, str] = field(default_factory=dict)


def _cifar_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_cifar10(
    root: pathlib.Path,
    per_batch: int = 2,
    n_test: int = 3,
    seed: int = 0,
    edit_train: Callable[[np.ndarray], None] | None = None,
) -> FakeCifar:
    """Write ``cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta) under ``root``.

    Pixels and labels are random from ``seed``; ``edit_train`` may change the training rows
    (5 * per_batch, 3072) in place before they are written.
    """
    rng = np.random.default_rng(seed)
    folder = pathlib.Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeCifar(folder, _cifar_rows(rng, 5 * per_batch), rng.integers(0, 10, 5 * per_batch),
                     _cifar_rows(rng, n_test), rng.integers(0, 10, n_test))  # fmt: skip
    if edit_train is not None:
        edit_train(fake.x_train)
    batches = [(f"data_batch_{i + 1}", slice(i * per_batch, (i + 1) * per_batch)) for i in range(5)]
    for name, x, y in [(n, fake.x_train[s], fake.y_train[s]) for n, s in batches] + [
        ("test_batch", fake.x_test, fake.y_test)
    ]:
        entry = {
            "batch_label": f"fake {name}",
            "labels": [int(v) for v in y],
            "data": x,
            "filenames": [f"img_{i}.png" for i in range(len(y))],
        }
        fake.md5[name] = _write_py2_pickle(folder / name, entry)
    meta = {
        "num_cases_per_batch": per_batch,
        "label_names": list(DATASETS["cifar10"].class_names),
        "num_vis": 3072,
    }
    fake.md5["batches.meta"] = _write_py2_pickle(folder / "batches.meta", meta)
    return fake


def write_cifar100(
    root: pathlib.Path, n_train: int = 4, n_test: int = 2, seed: int = 1
) -> FakeCifar:
    """Write ``cifar-100-python/`` (train, test, meta) under ``root``."""
    rng = np.random.default_rng(seed)
    folder = pathlib.Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeCifar(folder, _cifar_rows(rng, n_train), rng.integers(0, 100, n_train),
                     _cifar_rows(rng, n_test), rng.integers(0, 100, n_test))  # fmt: skip
    for name, x, y in [("train", fake.x_train, fake.y_train), ("test", fake.x_test, fake.y_test)]:
        entry = {
            "filenames": [f"img_{i}.png" for i in range(len(y))],
            "batch_label": f"fake {name}",
            "fine_labels": [int(v) for v in y],
            "coarse_labels": [int(v) // 5 for v in y],
            "data": x,
        }
        fake.md5[name] = _write_py2_pickle(folder / name, entry)
    meta = {
        "fine_label_names": list(DATASETS["cifar100"].class_names),
        "coarse_label_names": [f"super_{i}" for i in range(20)],
    }
    fake.md5["meta"] = _write_py2_pickle(folder / "meta", meta)
    return fake


def patch_cifar_md5(monkeypatch, dataset_cls, fake: FakeCifar) -> None:
    """Point ``dataset_cls``'s expected MD5s (train_list, test_list, meta) at ``fake``'s files."""
    for attr in ("train_list", "test_list"):
        entries = [[name, fake.md5[name]] for name, _ in getattr(dataset_cls, attr)]
        monkeypatch.setattr(dataset_cls, attr, entries)
    meta = dict(dataset_cls.meta, md5=fake.md5[dataset_cls.meta["filename"]])
    monkeypatch.setattr(dataset_cls, "meta", meta)


@dataclass
class FakeFashionMnist:
    """What was written: uint8 images (n, 28, 28) and labels per split."""

    folder: pathlib.Path
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _write_idx(path: pathlib.Path, magic: int, array: np.ndarray) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(
    root: pathlib.Path, n_train: int = 5, n_test: int = 3, seed: int = 2
) -> FakeFashionMnist:
    """Write ``FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` under ``root``."""
    rng = np.random.default_rng(seed)
    folder = pathlib.Path(root) / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    fake = FakeFashionMnist(
        folder,
        rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    )
    for split, x, y in [("train", fake.x_train, fake.y_train), ("t10k", fake.x_test, fake.y_test)]:
        _write_idx(folder / f"{split}-images-idx3-ubyte", 2051, x)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", 2049, y)
    return fake


# --- the user's own data sets and CIFAR-N label files -----------------------------------------
def write_user_npz(
    root: pathlib.Path, name: str = "mine", n_train: int = 40, n_test: int = 10, classes: int = 3,
    shape: tuple[int, ...] = (12, 12), seed: int = 3, noisy: bool = False, **replace: np.ndarray,
) -> dict[str, np.ndarray]:
    """Write ``root/NAME.npz`` with x_train (n_train, *shape) uint8, y_train, x_test, y_test (and
    y_train_noisy with ``noisy``); ``replace`` overrides or adds arrays. Returns what was written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
    }
    if noisy:
        arrays["y_train_noisy"] = (arrays["y_train"] + (np.arange(n_train) % 5 == 0)) % classes
    arrays.update(replace)
    pathlib.Path(root).mkdir(parents=True, exist_ok=True)
    np.savez(pathlib.Path(root) / f"{name}.npz", **arrays)
    return arrays


def write_image_folder(
    root: pathlib.Path, name: str = "pets", classes: tuple[str, ...] = ("cat", "dog"),
    per_class: int = 5, size: tuple[int, int] = (20, 16), mode: str = "RGB", split: bool = False,
    seed: int = 4,
) -> dict[str, list[np.ndarray]]:
    """Write PNG images in torchvision's ImageFolder layout: ``root/NAME/<class>/<i>.png`` (or
    ``root/NAME/{train,test}/<class>/<i>.png`` with ``split``, per_class images in each).
    ``size`` is (width, height). Returns class -> the pixel arrays written (train first)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    for part in ("train", "test") if split else ("",):
        for label, cls in enumerate(classes):
            folder = pathlib.Path(root) / name / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
                pixels.flat[0] = label * 50  # mark the class in the first pixel
                Image.fromarray(pixels, mode=mode).save(folder / f"{i:03d}.png")
                written[cls].append(pixels)
    return written


def write_cifar_n(
    root: pathlib.Path, clean: np.ndarray, file: str = "CIFAR-10_human.pt",
    label_sets: tuple[str, ...] = ("aggre_label", "random_label1", "random_label2", "random_label3", "worse_label"),
    rates: tuple[float, ...] = (0.1, 0.2, 0.2, 0.2, 0.4), num_classes: int = 10, seed: int = 5,
) -> dict[str, np.ndarray]:
    """Write a CIFAR-N label file as the real one is: torch.save of a dict of numpy int arrays,
    ``clean_label`` and one array per label set (a share ``rate`` of labels moved to the next
    class). Returns the dict."""
    import torch

    rng = np.random.default_rng(seed)
    table = {"clean_label": np.asarray(clean, dtype=np.int64)}
    for key, rate in zip(label_sets, rates, strict=True):
        flip = rng.random(len(clean)) < rate
        table[key] = np.where(flip, (table["clean_label"] + 1) % num_classes, table["clean_label"])
    torch.save(table, pathlib.Path(root) / file)
    return table
