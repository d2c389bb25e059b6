"""`loader`: training batches per second and per CPU core, decoded-image cache vs decoding JPEGs.

A generated ImageFolder-like set of JPEGs at the paper's sizes (ImageNet-R / CUB photos are about 500×375; here
random sizes 400–500 × 300–375, smooth content plus noise so they compress like photos). Both sides run in this
process with one torch thread, so each figure is per core:
- `jpeg`: the plain path, the torchvision training transform per image (decode, RandomResizedCrop 224, flip) and
  the DataLoader's collation, as `data.pipeline: pil` runs it with its workers;
- `cached`: the cache built once beforehand (not timed, as on a node that already has it), then the CPU's share
  of a `data.pipeline: cached` loader on a GPU node: gather uint8 images from the memory map into a batch (the
  crop, resize and flip run on the GPU). The ratio held to the goal is this one.
- `cached_cpu_augment`: the same plus the batched augmentation on this CPU, as a machine without a GPU runs it.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imlca.bench.measure import Measurement, Settings, divide, rounds, wall
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


def cached_epoch(decoded, generator: torch.Generator, augment: bool) -> None:
    order = torch.randperm(len(decoded), generator=generator)
    for chunk in order.split(BATCH):
        images, sizes = decoded.batch(chunk.tolist())
        if augment:
            train_batch(images, sizes, SIZE, (0.05, 1.0), True, generator)


def bench_loader(settings: Settings) -> Measurement:
    count, repeats = (64, 2) if settings.quick else (256, 3)
    with tempfile.TemporaryDirectory(prefix="imlca-bench-loader-") as tmp:
        images = jpeg_tree(Path(tmp), count)
        decoded = open_cache(images, SIZE, Path(tmp) / "cache")
        generator = torch.Generator().manual_seed(0)
        timings = rounds([wall("jpeg", lambda: jpeg_epoch(images)),
                          wall("cached", lambda: cached_epoch(decoded, generator, False)),
                          wall("cached_cpu_augment", lambda: cached_epoch(decoded, generator, True))], repeats)
        cache_bytes = decoded.nbytes
    rates = {name: count / seconds for name, seconds in timings.items()}
    ratios = {"cached_vs_jpeg": divide(timings["jpeg"], timings["cached"]),
              "cached_cpu_augment_vs_jpeg": divide(timings["jpeg"], timings["cached_cpu_augment"])}
    details = {"images": count, "batch": BATCH, "image_size": SIZE, "threads": torch.get_num_threads(),
               "images_per_s_per_core": rates, "cache_bytes": cache_bytes, "repeats": repeats}
    note = (f"{count} JPEGs ~450×340 → {SIZE} px training batches, img/s on 1 core: JPEG path {rates['jpeg']:.0f}, "
            f"cached (augmented on the device) {rates['cached']:.0f}, cached + augmentation on this CPU "
            f"{rates['cached_cpu_augment']:.0f}")
    return Measurement(ratios["cached_vs_jpeg"], timings, ratios, details=details, note=note)
