"""`gpu_paths` (`bench --gpu`): LoRA training of ViT-B/16 at 224 px in bf16, fed three ways, side by side.

- `synthetic`: one batch already on the GPU, repeated (the loop alone, as the `gpu` row);
- `cached`: the platform's `data.pipeline: cached` loader: generated photo-sized JPEGs decoded once into the
  image cache (not timed), gathered by loader workers, pinned, copied without blocking, augmented on the GPU;
- `jpeg`: the plain `data.pipeline: pil` loader: torchvision's per-image transforms decode and augment every
  JPEG in the loader workers.
All three run the platform's own model (random-init `vit_base_patch16_224`, LoRA r=64 on qkv, never downloaded)
and `train_task`. Workers: the machine's CPUs less one. MFU = images/s × 70 GFLOP / peak bf16 FLOP/s (DESIGN §6).

Needs only torch, torchvision, timm and peft: nothing here imports Ray or MLflow. Without CUDA it is skipped,
except with `--gpu --quick`, which runs the same three paths on the CPU with a two-block ViT at 32 px (a smoke test of
the script, no MFU).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from imlca.bench.gpu import mfu, peak_flops, record_for_plan
from imlca.bench.loader_speed import jpeg_tree
from imlca.bench.measure import Measurement, Settings

FULL = {"backbone": "vit_base_patch16_224", "size": 224, "precision": "bf16", "batch": 128, "images": 2048,
        "synthetic_steps": 30, "epochs": 2}
CPU_SMOKE = {"backbone": "vit_test_tiny", "size": 32, "precision": "fp32", "batch": 8, "images": 16,
             "synthetic_steps": 2, "epochs": 1}


def experiment(sizes: dict, device: torch.device, workers: int):
    from imlca.config import ExperimentConfig, from_dict

    return from_dict(ExperimentConfig, {
        "model": {"backbone": sizes["backbone"], "pretrained": False},
        "data": {"benchmark": "imagefolder", "image_size": sizes["size"], "num_workers": workers,
                 "pipeline": "cached"},
        "train": {"device": device.type, "precision": sizes["precision"], "batch_size": sizes["batch"],
                  "epochs": sizes["epochs"]}})


def timed_training(cfg, model, head, loader, device: torch.device) -> float:
    from imlca.engine.loops import train_task

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    train_task(model, head, loader, 0, cfg.train, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def loaders(cfg, images, root: Path, device: torch.device) -> dict:
    from imlca.data.base import View
    from imlca.data.cached_loader import CachedLoader, loader_workers
    from imlca.data.image_cache import open_cache
    from imlca.data.transforms import build_transform

    indices, labels = np.arange(len(images.labels)), images.labels
    decoded = open_cache(images, cfg.data.image_size, root / "cache", threads=os.cpu_count() or 1)
    torch.manual_seed(0)
    cached = CachedLoader(cfg, decoded, indices, labels, device, True, cfg.train.batch_size, shuffle_seed=0)
    view = View(images, indices, labels, build_transform(cfg.data, True))
    workers = loader_workers(cfg)
    jpeg = DataLoader(view, batch_size=cfg.train.batch_size, shuffle=True, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    return {"cached": cached, "jpeg": jpeg}


def bench_gpu_paths(settings: Settings) -> Measurement:
    cuda = torch.cuda.is_available()
    if not cuda and not (settings.gpu and settings.quick):
        return Measurement([], skipped="no CUDA device (torch.cuda.is_available() is False); --gpu --quick "
                                         "runs a CPU smoke test of the same paths")
    from imlca.models.heads import init_head
    from imlca.models.model import build_model

    sizes, device = (FULL if cuda else CPU_SMOKE), torch.device("cuda" if cuda else "cpu")
    workers = max((os.cpu_count() or 1) - 1, 0) if cuda else 0
    cfg = experiment(sizes, device, workers)
    model = build_model(cfg).to(device)
    head = nn.Parameter(init_head(2, model.dim, torch.Generator().manual_seed(0)).to(device))
    gen = torch.Generator(device=device).manual_seed(0)
    batch = (torch.rand(sizes["batch"], 3, sizes["size"], sizes["size"], device=device, generator=gen),
             torch.randint(0, 2, (sizes["batch"],), device=device, generator=gen))
    timed_training(cfg, model, head, [batch] * 2, device)  # warm-up: kernels, allocator
    seconds = {"synthetic": timed_training(cfg, model, head, [batch] * sizes["synthetic_steps"], device)}
    counts = {"synthetic": sizes["epochs"] * sizes["synthetic_steps"] * sizes["batch"]}  # train_task: every epoch
    with tempfile.TemporaryDirectory(prefix="imlca-bench-gpu-") as tmp:
        images = jpeg_tree(Path(tmp), sizes["images"])
        for name, loader in loaders(cfg, images, Path(tmp), device).items():
            seconds[name] = timed_training(cfg, model, head, loader, device)
            counts[name] = sizes["images"] * sizes["epochs"]
    rates = {name: counts[name] / seconds[name] for name in seconds}
    if cuda:  # `imlca plan` takes this GPU's figures from here
        record_for_plan(sizes["backbone"], model, batch, rates["synthetic"], sizes["precision"], device)
    details = {"device": torch.cuda.get_device_name(device) if cuda else "cpu", "loader_workers": workers,
               "images_per_s": rates, **sizes}
    note = f"{details['device']}: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rates.items())
    if not cuda:
        return Measurement([], seconds, details=details, note=note,
                           skipped="no CUDA device: a CPU smoke test of the three paths (two-block ViT, 32 px), no MFU")
    peak = peak_flops(details["device"])
    if peak is None:
        return Measurement([], seconds, details=details, note=note,
                           skipped=f"peak bf16 FLOP/s of '{details['device']}' is not known; no MFU")
    mfus = {f"{name}_mfu": mfu(rate, peak) for name, rate in rates.items()}
    return Measurement([mfus["cached_mfu"]], seconds, mfus, details=details, note=note)  # one timed pass a path
