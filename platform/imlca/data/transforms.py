"""Train and test transforms (DESIGN §1): RandomResizedCrop + flip for training; Resize + CenterCrop otherwise.

Inputs may be uint8 tensors (1 or 3 channels) or PIL images; outputs are float32 [3, S, S] in [0, 1], normalised
only when asked (the reference feeds raw pixels to the ViT).
"""
from __future__ import annotations

import torch
from torchvision.transforms import v2

from imlca.config import DataConfig


def build_transform(cfg: DataConfig, train: bool, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> v2.Compose:
    size = cfg.image_size
    steps: list = [v2.ToImage(), v2.RGB()]
    if train:
        steps.append(v2.RandomResizedCrop(size, scale=(cfg.crop_scale_min, 1.0), antialias=True))
        if cfg.hflip:
            steps.append(v2.RandomHorizontalFlip())
    else:
        steps += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if cfg.normalize:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return v2.Compose(steps)
