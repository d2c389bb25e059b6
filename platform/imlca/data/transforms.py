"""Train and test transforms (DESIGN §1): RandomResizedCrop + flip for training; Resize + CenterCrop for the
statistics and evaluation.

Inputs may be uint8 tensors (1 or 3 channels) or PIL images; outputs are float32 [3, S, S] in [0, 1], normalised
only when asked (the reference feeds raw pixels to the ViT). The resize runs on uint8 tensors with antialiasing,
which is within one grey level of PIL's resize (tests/test_paper_protocol.py).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from imlca.config import DataConfig
from imlca.config.data import INTERPOLATIONS

INTERPOLATION = {name: v2.InterpolationMode[name.upper()] for name in INTERPOLATIONS}
# The authors' test resize (their utils/data.py, build_transform): int(256/224 · size), except CIFAR-100, whose
# 32-px images are resized to the crop size itself
AUTHORS_RESIZE_RATIO = 256 / 224
AUTHORS_UPSCALED = ("cifar100",)


def eval_resize(cfg: DataConfig) -> int:
    """The shorter side before the centre crop, in pixels."""
    ratio = cfg.eval_resize_ratio
    if ratio is None:
        ratio = 1.0 if cfg.benchmark in AUTHORS_UPSCALED else AUTHORS_RESIZE_RATIO
    return int(ratio * cfg.image_size)


def build_transform(cfg: DataConfig, train: bool, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> v2.Compose:
    size = cfg.image_size
    steps: list = [v2.ToImage(), v2.RGB()]
    if train:
        steps.append(v2.RandomResizedCrop(size, scale=(cfg.crop_scale_min, 1.0), antialias=True))
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip())
    else:
        steps += [v2.Resize(eval_resize(cfg), interpolation=INTERPOLATION[cfg.eval_interpolation], antialias=True),
                  v2.CenterCrop(size)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if cfg.normalize:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)
