"""`synthetic`: tiny generated images for unit tests only (6 classes, 3 tasks × 2, 16×16 RGB).

Each class is a fixed random pattern plus per-image noise, so a small network separates the classes quickly.
"""
from __future__ import annotations

import numpy as np
import torch

from imlca.config import DataConfig
from imlca.data.base import TensorImageSet

NUM_CLASSES, SIZE, TRAIN_PER_CLASS, TEST_PER_CLASS = 6, 16, 40, 20


def make_images(per_class: int, seed: int) -> TensorImageSet:
    patterns = np.random.RandomState(0).uniform(0, 255, size=(NUM_CLASSES, 3, SIZE, SIZE))
    rng = np.random.RandomState(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    noise = rng.normal(0, 40, size=(len(labels), 3, SIZE, SIZE))
    images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
    return TensorImageSet(torch.from_numpy(images), labels)


def load_synthetic(cfg: DataConfig) -> tuple[TensorImageSet, TensorImageSet]:
    return make_images(TRAIN_PER_CLASS, seed=1), make_images(TEST_PER_CLASS, seed=2)
