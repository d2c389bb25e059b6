"""The train and test transforms of `imlca.data.transforms` as batched tensor operations on uint8 batches.

Input: uint8 [B, 3, H, W] on any device (CPU or GPU), each image in the top-left corner of the batch with its own
(height, width) in `sizes` [B, 2] (the rest is padding). Output: float32 [B, 3, S, S] in [0, 1], normalised
when asked, as the per-image torchvision pipeline gives.

- Training: torchvision's RandomResizedCrop box sampling (ten tries of scale × log-uniform ratio, else the
  ratio-clamped centre crop), vectorised over the batch, then crop + resize of every box at once with
  `roi_align` (each output pixel averages the source pixels under it, so downscaling is antialiased; upscaling is
  bilinear), then a horizontal flip with probability 0.5. Same distribution of boxes and flips as torchvision;
  the interpolation differs in rounding only.
- Evaluation: `v2.functional.resize` (shorter side to the evaluation resize R = int(ratio · S), with the
  evaluation interpolation) and `center_crop` to S, the calls the plain path makes, on the whole batch when all
  images share a size (else image by image): the same pixels as the plain path (the cache stores images at R).
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from imlca.data.transforms import INTERPOLATION

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
TRIES = 10  # RandomResizedCrop's attempts before its fallback


def crop_boxes(sizes: torch.Tensor, scale: tuple[float, float], generator: torch.Generator,
               ratio: tuple[float, float] = RATIO) -> torch.Tensor:
    """RandomResizedCrop.make_params for every image: sizes int64 [B, 2] (h, w) → boxes int64 [B, 4] (top, left,
    height, width). Draws on the CPU from `generator`."""
    height, width = sizes[:, :1].double(), sizes[:, 1:].double()  # [B, 1]
    count = len(sizes)
    target = height * width * torch.empty(count, TRIES, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(count, TRIES, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                       generator=generator)
    aspect = log_ratio.exp()
    w = torch.round((target * aspect).sqrt())  # [B, TRIES]; round half to even, as Python's round
    h = torch.round((target / aspect).sqrt())
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.double().argmax(1, keepdim=True)  # first successful try (0 when none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)  # [B]
    u = torch.rand(count, 2, dtype=torch.float64, generator=generator)
    top = torch.floor(u[:, 0] * (height.squeeze(1) - h + 1))  # uniform integer in [0, H − h]
    left = torch.floor(u[:, 1] * (width.squeeze(1) - w + 1))
    boxes = torch.stack([top, left, h, w], 1)
    fallback = ~ok.any(1)
    if fallback.any():
        boxes[fallback] = _centre_boxes(height[fallback, 0], width[fallback, 0], ratio)
    return boxes.long()


def _centre_boxes(height: torch.Tensor, width: torch.Tensor, ratio: tuple[float, float]) -> torch.Tensor:
    """RandomResizedCrop's fallback: the whole image, its aspect clamped to `ratio`, centred."""
    in_ratio = width / height
    w = torch.where(in_ratio < ratio[0], width, torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]),
                                                             width))
    h = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    return torch.stack([torch.div(height - h, 2, rounding_mode="floor"),
                        torch.div(width - w, 2, rounding_mode="floor"), h, w], 1)


def _finish(images: torch.Tensor, normalize: bool, mean, std) -> torch.Tensor:
    images = TF.to_dtype(images, torch.float32, scale=True) if images.dtype == torch.uint8 else images / 255
    return TF.normalize(images, list(mean), list(std)) if normalize else images


def train_batch(images: torch.Tensor, sizes: torch.Tensor, size: int, scale: tuple[float, float], hflip: bool,
                generator: torch.Generator, normalize: bool = False, mean=(0.5,) * 3, std=(0.5,) * 3) -> torch.Tensor:
    """Random-resized crop to size×size, flip, scale to [0, 1] (and normalise): uint8 [B, 3, H, W] → float [B, 3,
    S, S]. The boxes and flips are drawn on the CPU from `generator`, so they do not depend on the device."""
    boxes = crop_boxes(sizes, scale, generator).double()  # [B, 4] top, left, h, w
    flips = torch.rand(len(sizes), generator=generator) < 0.5 if hflip else torch.zeros(len(sizes), dtype=torch.bool)
    rois = torch.stack([torch.arange(len(boxes), dtype=torch.float64), boxes[:, 1], boxes[:, 0],
                        boxes[:, 1] + boxes[:, 3], boxes[:, 0] + boxes[:, 2]], 1)  # [B, 5] index, x1, y1, x2, y2
    pixels = images.float()
    crops = roi_align(pixels, rois.to(pixels), output_size=size, spatial_scale=1.0, sampling_ratio=-1,
                      aligned=True)  # [B, 3, S, S] in [0, 255]
    flips = flips.to(crops.device)
    crops = torch.where(flips[:, None, None, None], crops.flip(-1), crops)
    return _finish(crops, normalize, mean, std)


def eval_batch(images: torch.Tensor, sizes: torch.Tensor, size: int, normalize: bool = False, mean=(0.5,) * 3,
               std=(0.5,) * 3, resize: int | None = None, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize (shorter side to `resize`, default `size`) + centre crop to `size`, the plain path's calls: uint8 [B,
    3, H, W] → float [B, 3, S, S]."""
    mode = INTERPOLATION[interpolation]

    def crop(batch: torch.Tensor) -> torch.Tensor:
        return TF.center_crop(TF.resize(batch, [resize or size], interpolation=mode, antialias=True), [size])

    if bool((sizes == sizes[0]).all()):
        height, width = (int(v) for v in sizes[0])
        out = crop(images[..., :height, :width])
    else:
        out = torch.stack([crop(image[:, :int(h), :int(w)]) for image, (h, w) in zip(images, sizes)])
    return _finish(out, normalize, mean, std)
