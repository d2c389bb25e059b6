"""Image sets: images + the dataset's own integer labels, loaded lazily, viewed through a transform."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from imlca.errors import DataError


class ImageSet(Dataset):
    """`labels[i]` is the class id of image `i`; `load(i)` returns a uint8 CxHxW tensor or an RGB PIL image."""

    labels: np.ndarray  # int64 [N]

    def load(self, index: int):
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.load(index), int(self.labels[index])

    def verify(self) -> None:
        """Cheap check that every image can be opened (raises DataError naming the first bad one)."""


class TensorImageSet(ImageSet):
    """In-memory images, uint8 [N, C, H, W] (C = 1 for grey, 3 for RGB)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 [N, C, H, W] images matching {len(labels)} labels, got "
                             f"{images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, np.asarray(labels, dtype=np.int64)

    def load(self, index: int) -> torch.Tensor:
        return self.images[index]


class FileImageSet(ImageSet):
    """Images in files on disk (ImageFolder trees, Stanford Cars), opened as RGB on access."""

    def __init__(self, paths: Sequence[str | Path], labels: np.ndarray):
        self.paths, self.labels = [str(p) for p in paths], np.asarray(labels, dtype=np.int64)

    @staticmethod
    def _open(path: str, decode: bool) -> Image.Image | None:
        try:
            with Image.open(path) as image:  # reads the header; pixels only when decoded
                return image.convert("RGB") if decode else None
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read image {path} ({err.__class__.__name__}); replace or remove the file") \
                from None

    def verify(self) -> None:
        for path in self.paths:
            self._open(path, decode=False)

    def load(self, index: int) -> Image.Image:
        return self._open(self.paths[index], decode=True)


def first_per_class(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices keeping the first `limit` samples of each class, in dataset order (all when limit is None)."""
    if limit is None:
        return np.arange(len(labels))
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        keep[np.flatnonzero(labels == cls)[:limit]] = True
    return np.flatnonzero(keep)


class View(Dataset):
    """Samples `indices` of `images`, transformed, with `targets` (positions in the class order) as labels."""

    def __init__(self, images: ImageSet, indices: np.ndarray, targets: np.ndarray, transform: Callable):
        assert len(indices) == len(targets)
        self.images, self.indices, self.targets, self.transform = images, indices, targets, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.transform(self.images.load(int(self.indices[i]))), int(self.targets[i])
