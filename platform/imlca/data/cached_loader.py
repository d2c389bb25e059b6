"""Batches for the training and feature loops from the decoded-image cache (`data.pipeline: cached`).

Loader workers only gather uint8 images from the memory map (no decoding, no per-image transforms); the batch is
pinned, copied to the device without blocking, and augmented there as one tensor operation
(`imlca.data.device_augment`). Shuffling and augmentation draw from generators in the main process, so the batches
do not depend on the number of workers, on pinning or on the device.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from imlca.config import ExperimentConfig
from imlca.data.device_augment import eval_batch, train_batch
from imlca.data.image_cache import DecodedImages, cache_root, open_cache
from imlca.data.transforms import eval_resize


def loader_workers(cfg: ExperimentConfig) -> int:
    """`data.num_workers`, or when null the CPUs the trial holds less the one the training loop runs on."""
    if cfg.data.num_workers is not None:
        return cfg.data.num_workers
    return max(int(cfg.resources.num_cpus) - 1, 0)


class _Gather(Dataset):
    """Item = a list of view positions → (uint8 [B, 3, H, W], sizes [B, 2], targets [B])."""

    def __init__(self, decoded: DecodedImages, indices: np.ndarray, targets: np.ndarray):
        self.decoded, self.indices, self.targets = decoded, indices, torch.as_tensor(targets, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: list[int]):
        images, sizes = self.decoded.batch(self.indices[positions])
        return images, sizes, self.targets[positions]


class _Chunks:
    """The batches of one epoch, in the order `next_epoch` drew (DataLoader may call iter() more than once per
    epoch: with worker processes it does so twice at the start, so the draw cannot happen there)."""

    def __init__(self, count: int, batch: int, generator: torch.Generator | None):
        self.count, self.batch, self.generator = count, batch, generator
        self.order = torch.arange(count)

    def next_epoch(self) -> None:
        if self.generator is not None:
            self.order = torch.randperm(self.count, generator=self.generator)

    def __iter__(self):
        return iter([chunk.tolist() for chunk in self.order.split(self.batch)])

    def __len__(self) -> int:
        return -(-self.count // self.batch)


class CachedLoader:
    """Iterable of (float32 [B, 3, S, S] on `device`, int64 targets [B] on `device`), re-shuffled each epoch."""

    def __init__(self, cfg: ExperimentConfig, decoded: DecodedImages, indices: np.ndarray, targets: np.ndarray,
                 device: torch.device, train: bool, batch: int, shuffle_seed: int | None = None, mean=(0.5,) * 3,
                 std=(0.5,) * 3):
        self.cfg, self.device, self.train, self.mean, self.std = cfg.data, device, train, mean, std
        self.channels_last = cfg.train.channels_last
        shuffle = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
        # the runner seeds the global RNG per task (the torchvision transforms draw from it); ours derives from it
        self.augment = torch.Generator().manual_seed(int(torch.randint(2**62, ()))) if train else None
        workers = loader_workers(cfg)
        self.loader = DataLoader(_Gather(decoded, indices, targets), sampler=_Chunks(len(indices), batch, shuffle),
                                 batch_size=None, num_workers=workers, persistent_workers=workers > 0,
                                 pin_memory=device.type == "cuda")

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        data = self.cfg
        self.loader.sampler.next_epoch()
        for images, sizes, targets in self.loader:
            images = images.to(self.device, non_blocking=True)
            if self.train:
                out = train_batch(images, sizes, data.image_size, (data.crop_scale_min, 1.0), data.hflip,
                                  self.augment, data.normalize, self.mean, self.std)
            else:
                out = eval_batch(images, sizes, data.image_size, data.normalize, self.mean, self.std,
                                 eval_resize(data), data.eval_interpolation)
            if self.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
            yield out, targets.to(self.device, non_blocking=True)


def open_caches(cfg: ExperimentConfig, benchmark) -> dict[str, DecodedImages]:
    """The benchmark's train, test (and validation) parts in this node's cache (decoded with the trial's CPUs when missing), each
    image stored as the evaluation resize leaves it (training crops are drawn from that)."""
    root, threads = cache_root(cfg.data.cache_dir), max(int(cfg.resources.num_cpus), 1)
    parts = ("train", "test") + (("val",) if benchmark.val is not None else ())  # val: data.val_fraction > 0
    return {part: open_cache(getattr(benchmark, part), eval_resize(cfg.data), root, threads,
                             cfg.data.eval_interpolation)
            for part in parts}


class CachedBenchmark:
    """The benchmark's parts in the node's cache, and loaders over views of them."""

    def __init__(self, cfg: ExperimentConfig, benchmark, device: torch.device, mean, std):
        self.cfg, self.benchmark, self.device, self.mean, self.std = cfg, benchmark, device, mean, std
        self.parts = open_caches(cfg, benchmark)

    def loader(self, part: str, tasks, train: bool, batch: int, shuffle_seed: int | None = None) -> CachedLoader:
        view = self.benchmark.view(part, tasks, None)
        return CachedLoader(self.cfg, self.parts[part], view.indices, view.targets, self.device, train, batch,
                            shuffle_seed, self.mean, self.std)
