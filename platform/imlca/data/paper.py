"""The paper's benchmarks on their usual on-disk layouts (DESIGN §2), except Stanford Cars (`imlca.data.cars`).

- `cifar100`: torchvision's python format, `<root>/cifar-100-python/{train,test}` pickles.
- `imagenet_r`, `imagenet_a`, `cub`, `omnibenchmark`, `vtab`: the pre-split ImageFolder trees of the
  RevisitingCIL/APER/PILOT convention, `<root>/<dir>/{train,test}/<class>/*.jpg`.
- `imagefolder`: any such tree directly under the root; the class count comes from the data and the split from
  `data.task_sizes`.
The root is `data.root`, else `$IMLCA_DATA`: a folder, or an object-store prefix (`s3://bucket/prefix`) that
`imlca data push` filled, copied once per node. Every expected path is checked before anything is read.
"""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from imlca.config import DataConfig
from imlca.data.base import FileImageSet, TensorImageSet
from imlca.errors import DataError
from imlca.registries import BENCHMARKS

# torchvision's IMG_EXTENSIONS, matched case-insensitively
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ROOT_FIX = "set data.root or IMLCA_DATA"


def data_root(cfg: DataConfig, name: str, holds: str) -> Path:
    """`data.root`, else `$IMLCA_DATA`; `holds` says what the user should point it at. An object-store URI
    (s3://, gs://) is materialised on this node first (`imlca.data.remote`) and its local copy returned."""
    root = cfg.root or os.environ.get("IMLCA_DATA")
    if not root:
        raise DataError(f"{name}: no data root; set data.root or the IMLCA_DATA environment variable to the "
                        f"folder (or s3:// / gs:// prefix) that holds {holds}")
    if "://" in root and not root.startswith("file://"):  # object_store.is_uri, without importing pyarrow here
        from imlca.data.remote import materialise

        start = time.perf_counter()
        local, fetched = materialise(root, cfg.benchmark, cfg.cache_dir)
        if fetched:
            print(f"{name}: copied {fetched} bytes from {root} to {local} in {time.perf_counter() - start:.1f} s "
                  "(once per node)", flush=True)
        return local
    return Path(root).expanduser()


def require(paths: list[Path], name: str, layout: str) -> None:
    """Raise on the first missing path, naming it, the expected layout and the fix."""
    for path in paths:
        if not path.exists():
            raise DataError(f"{name}: {path} not found; expected {layout}; {ROOT_FIX}")


# ---------------------------------------------------------------- CIFAR-100

CIFAR_LAYOUT = "torchvision's CIFAR-100 python format <root>/cifar-100-python/{train,test,meta}"
# The globals a CIFAR pickle may name: numpy array reconstruction (the official files were written by Python 2's
# numpy.core; NumPy 2 writes numpy._core) and `_codecs.encode` (how Python 3 pickles bytes at protocol 2).
# Anything else is refused, so a tampered file under the data root cannot run code.
CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return super().find_class(module, name)


def read_cifar_pickle(path: Path) -> TensorImageSet:
    """One torchvision CIFAR-100 pickle → uint8 [N, 3, 32, 32] images (rows are R, G, B planes of 32×32)."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            KeyError, OverflowError) as err:
        raise DataError(f"cifar100: {path} is not a CIFAR-100 pickle ({err}); re-extract cifar-100-python.tar.gz")
    fix = "re-extract cifar-100-python.tar.gz"
    if not isinstance(entry, dict) or b"data" not in entry or b"fine_labels" not in entry:
        raise DataError(f"cifar100: {path} lacks the b'data' / b'fine_labels' entries; {fix}")
    data, labels = np.asarray(entry[b"data"]), np.asarray(entry[b"fine_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(f"cifar100: {path} holds data {data.dtype} {data.shape} and {labels.shape} labels, "
                        f"expected uint8 [N, 3072] with N labels; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() > 99):
        raise DataError(f"cifar100: {path} has fine labels outside 0..99; {fix}")
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return TensorImageSet(images, labels.astype(np.int64))


def load_cifar100(cfg: DataConfig) -> tuple[TensorImageSet, TensorImageSet]:
    folder = data_root(cfg, "cifar100", "cifar-100-python/") / "cifar-100-python"
    require([folder / "train", folder / "test"], "cifar100", CIFAR_LAYOUT)
    return read_cifar_pickle(folder / "train"), read_cifar_pickle(folder / "test")


# ---------------------------------------------------------------- ImageFolder trees

def _image_files(folder: str) -> list[str]:
    """Image files under `folder`, recursively (as ImageFolder), by name only: nothing is opened. Hidden entries
    are skipped (macOS copies leave `._x.jpg` resource forks that are not images)."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                found += _image_files(entry.path)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(entry.path)
    return found


def class_folders(split_dir: Path) -> list[str]:
    """Sorted class folder names (ImageFolder's class ids); hidden folders such as .ipynb_checkpoints are skipped."""
    with os.scandir(split_dir) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def scan_split(split_dir: Path, classes: list[str], name: str) -> FileImageSet:
    """Files of `split_dir/<class>/` labelled by the class's index in `classes`, sorted for determinism."""
    paths, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(_image_files(str(split_dir / cls)))
        if not files:
            raise DataError(f"{name}: {split_dir / cls} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                            "add its images or remove the folder from train/ and test/")
        paths += files
        labels += [label] * len(files)
    return FileImageSet(paths, np.asarray(labels, dtype=np.int64))


def _mismatch(train: list[str], test: list[str]) -> str:
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    return f"only in train/: {only_train[:5] or 'none'}, only in test/: {only_test[:5] or 'none'}"


def load_image_folder(base: Path, name: str, layout: str, num_classes: int = 0) -> tuple[FileImageSet, FileImageSet]:
    """`base/{train,test}/<class>/...`; with `num_classes` > 0 the class count must match it."""
    require([base / "train", base / "test"], name, layout)
    classes, test_classes = class_folders(base / "train"), class_folders(base / "test")
    if classes != test_classes:
        raise DataError(f"{name}: the class folders of {base / 'train'} and {base / 'test'} differ "
                        f"({_mismatch(classes, test_classes)}); give both splits the same classes")
    if num_classes and len(classes) != num_classes:
        raise DataError(f"{name}: found {len(classes)} class folders in {base / 'train'}, expected {num_classes}; "
                        "point the data root at the complete pre-split copy")
    return scan_split(base / "train", classes, name), scan_split(base / "test", classes, name)


FOLDER_LOADERS = ("imlca.data.paper:load_paper_folder", "imlca.data.paper:load_imagefolder")


def folder_class_names(cfg: DataConfig) -> list[str] | None:
    """The class folder names of an ImageFolder benchmark (class id → name, as the loader numbers them), read from
    a local data root; None for other benchmarks, or where the tree is not on this node (an object store)."""
    spec, root = BENCHMARKS[cfg.benchmark], cfg.root or os.environ.get("IMLCA_DATA")
    if spec.target not in FOLDER_LOADERS or not root or "://" in root:
        return None
    try:
        return class_folders(Path(root).expanduser() / (spec.folder or "") / "train")
    except OSError:
        return None


def load_paper_folder(cfg: DataConfig) -> tuple[FileImageSet, FileImageSet]:
    """The pre-split ImageFolder sets of DESIGN §2; folder and class count come from the benchmark's entry."""
    spec = BENCHMARKS[cfg.benchmark]
    base = data_root(cfg, spec.name, f"{spec.folder}/") / spec.folder
    layout = f"the pre-split ImageFolder tree <root>/{spec.folder}/{{train,test}}/<class>/*.jpg"
    return load_image_folder(base, spec.name, layout, spec.num_classes)


def load_imagefolder(cfg: DataConfig) -> tuple[FileImageSet, FileImageSet]:
    root = data_root(cfg, "imagefolder", "train/ and test/")
    return load_image_folder(root, "imagefolder", "an ImageFolder tree <root>/{train,test}/<class>/*.jpg")
