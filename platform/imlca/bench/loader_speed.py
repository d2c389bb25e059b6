"""`loader`: training batches per second and per CPU core, decoded-image cache vs decoding JPEGs.

A generated ImageFolder-like set of JPEGs at the paper's sizes (ImageNet-R / CUB photos are about 500×375; here
random sizes 400–500 × 300–375, smooth content plus noise so they compress like photos). Both sides run in this
process with one torch thread, so each figure is per core, and both do the same work: a training batch of
RandomResizedCrop(224, scale 0.05–1) + flip.
- `jpeg`: the plain path, the torchvision training transform per image (decode, crop, resize, flip) and the
  DataLoader's collation, as `data.pipeline: pil` runs it with its workers;
- `cached_augment`: the cache built once beforehand (not timed, as on a node that already has it), then a
  `data.pipeline: cached` batch: uint8 images gathered from the memory map, cropped, resized and flipped as one
  batch on the device this run uses (the GPU when there is one, waited for; else this CPU). The ratio held to the
  goal is jpeg / cached_augment: the same augmentation on both sides.
- `cached_gather` (beside it, not judged): the gather alone, the CPU's share of the cached path when the
  augmentation runs on a GPU.
"""
from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imlca.bench.measure import Measurement, Samples, Settings, divide, medians, per_round, rounds, wall
from imlca.config import DataConfig
from imlca.data.base import FileImageSet, View
from imlca.data.device_augment import train_batch
from imlca.data.image_cache import open_cache
from imlca.data.transforms import build_transform

SIZE, BATCH = 224, 32


def jpeg_tree(folder: Path, count: int, seed: int = 0) -> FileImageSet:
    """`count` JPEGs (quality 90) of photo-like sizes, two classes."""
    rng = np.random.RandomState(seed)
    paths = []
    for k in range(count):
        w, h = rng.randint(400, 501), rng.randint(300, 376)
        ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(50, 200, 3) + np.linspace(0, 1, h)[:, None, None] * 50
        pixels = np.clip(ramp + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"{k:05d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return FileImageSet(paths, np.arange(count) % 2)


def jpeg_epoch(images: FileImageSet) -> None:
    tf = build_transform(DataConfig(benchmark="imagefolder", image_size=SIZE, crop_scale_min=0.05), True)
    view = View(images, np.arange(len(images.labels)), images.labels, tf)
    for _ in DataLoader(view, batch_size=BATCH, shuffle=True, num_workers=0):
        pass


def cached_epoch(decoded, generator: torch.Generator, device: torch.device | None) -> None:
    """Gather every batch; with a device, also crop, resize and flip it there (as CachedLoader does)."""
    order = torch.randperm(len(decoded), generator=generator)
    for chunk in order.split(BATCH):
        images, sizes = decoded.batch(chunk.tolist())
        if device is not None:
            train_batch(images.to(device), sizes, SIZE, (0.05, 1.0), True, generator)
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_figures(samples: Samples) -> tuple[list[float], dict[str, float]]:
    """Per round, jpeg / cached_augment (the figure held to the goal); the median of jpeg / cached_gather beside."""
    def ratio(name: str) -> list[float]:
        return per_round(samples, lambda times: divide(times["jpeg"], times[name]))

    return ratio("cached_augment"), {"cached_augment_vs_jpeg": statistics.median(ratio("cached_augment")),
                                     "cached_gather_vs_jpeg": statistics.median(ratio("cached_gather"))}


def bench_loader(settings: Settings) -> Measurement:
    count, repeats = (64, 3) if settings.quick else (256, 3)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="imlca-bench-loader-") as tmp:
        images = jpeg_tree(Path(tmp), count)
        decoded = open_cache(images, SIZE, Path(tmp) / "cache")
        generator = torch.Generator().manual_seed(0)
        samples = rounds([wall("jpeg", lambda: jpeg_epoch(images)),
                          wall("cached_augment", lambda: cached_epoch(decoded, generator, device)),
                          wall("cached_gather", lambda: cached_epoch(decoded, generator, None))], repeats)
        cache_bytes = decoded.nbytes
    figures, ratios = loader_figures(samples)
    timings = medians(samples)
    rates = {name: count / seconds for name, seconds in timings.items()}
    details = {"images": count, "batch": BATCH, "image_size": SIZE, "threads": torch.get_num_threads(),
               "augment_device": device.type, "images_per_s_per_core": rates, "cache_bytes": cache_bytes,
               "repeats": repeats}
    note = (f"{count} JPEGs ~450×340 → {SIZE} px training batches, img/s on 1 core: JPEG path {rates['jpeg']:.0f}, "
            f"cached + augmentation on the {device.type} {rates['cached_augment']:.0f}; gather alone (not judged) "
            f"{rates['cached_gather']:.0f}")
    return Measurement(figures, timings, ratios, details=details, note=note)
