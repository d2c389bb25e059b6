"""`cars`: Stanford Cars in torchvision's `StanfordCars` layout (its download is disabled upstream: a manual copy).

    <root>/stanford_cars/devkit/cars_meta.mat             class_names: 196 names
    <root>/stanford_cars/devkit/cars_train_annos.mat      annotations: fname, class (1-based), bbox_*
    <root>/stanford_cars/cars_test_annos_withlabels.mat   the same for the test split
    <root>/stanford_cars/cars_train/*.jpg, cars_test/*.jpg
The .mat files are read as torchvision reads them: `scipy.io.loadmat(path, squeeze_me=True)`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from imlca.config import DataConfig
from imlca.data.base import FileImageSet
from imlca.data.paper import data_root, require
from imlca.errors import DataError

NUM_CLASSES = 196
LAYOUT = ("torchvision's StanfordCars layout <root>/stanford_cars/{devkit/cars_meta.mat, "
          "devkit/cars_train_annos.mat, cars_train/, cars_test/, cars_test_annos_withlabels.mat}")
FIX = "replace it with the file from the original Stanford Cars devkit"


def read_mat(path: Path, key: str) -> np.ndarray:
    """`key` of a .mat file, squeezed as torchvision does; at least 1-d (a single struct squeezes to 0-d)."""
    import scipy.io  # lazy: only this benchmark needs scipy

    try:
        return np.atleast_1d(scipy.io.loadmat(str(path), squeeze_me=True)[key])
    except KeyError:
        raise DataError(f"cars: {path} has no '{key}' entry; {FIX}") from None
    except (ValueError, TypeError, OSError, scipy.io.matlab.MatReadError) as err:
        raise DataError(f"cars: {path} is not a readable .mat file ({err}); {FIX}") from None


def read_annotations(path: Path, images_dir: Path) -> FileImageSet:
    """Annotation structs (fname, 1-based class) → files in `images_dir` with 0-based labels."""
    annotations = read_mat(path, "annotations")
    try:
        names, classes = [str(n) for n in annotations["fname"]], np.asarray(annotations["class"], dtype=np.int64)
    except (ValueError, IndexError, TypeError) as err:
        raise DataError(f"cars: {path} annotations lack the 'fname'/'class' fields ({err}); {FIX}") from None
    if not len(classes):
        raise DataError(f"cars: {path} holds no annotations; {FIX}")
    if classes.min() < 1 or classes.max() > NUM_CLASSES:
        raise DataError(f"cars: {path} has classes {classes.min()}..{classes.max()}, expected 1..{NUM_CLASSES}; {FIX}")
    with os.scandir(images_dir) as entries:  # one listing instead of a stat per file
        present = {e.name for e in entries}
    missing = [n for n in names if n not in present]
    if missing:
        raise DataError(f"cars: {len(missing)} images named in {path.name} are missing from {images_dir} "
                        f"(first: {missing[0]}); copy the complete {images_dir.name}/ folder")
    return FileImageSet([images_dir / n for n in names], classes - 1)


def load_cars(cfg: DataConfig) -> tuple[FileImageSet, FileImageSet]:
    base = data_root(cfg, "cars", "stanford_cars/") / "stanford_cars"
    devkit = base / "devkit"
    require([devkit / "cars_meta.mat", devkit / "cars_train_annos.mat", base / "cars_train",
             base / "cars_test", base / "cars_test_annos_withlabels.mat"], "cars", LAYOUT)
    class_names = read_mat(devkit / "cars_meta.mat", "class_names")
    if len(class_names) != NUM_CLASSES:
        raise DataError(f"cars: {devkit / 'cars_meta.mat'} lists {len(class_names)} classes, expected "
                        f"{NUM_CLASSES}; {FIX}")
    train = read_annotations(devkit / "cars_train_annos.mat", base / "cars_train")
    test = read_annotations(base / "cars_test_annos_withlabels.mat", base / "cars_test")
    return train, test
