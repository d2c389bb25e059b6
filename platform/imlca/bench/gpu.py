"""`gpu`: LoRA fine-tuning of ViT-B/16 at 224 px in bf16 on one CUDA device: images/s and model FLOP utilisation.

The platform's own model (build_model: random-init `vit_base_patch16_224`, LoRA r=64 on qkv) and training loop
(train_task: SGD, bf16 autocast) on synthetic tensors already on the GPU, so the number is the loop's, not a
data loader's. MFU = images/s × 70 GFLOP per image / the device's peak dense bf16 FLOP/s, one value per timed pass.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from imlca.bench.measure import Measurement, Settings

FLOP_PER_IMAGE = 70e9  # DESIGN §6: forward 17.58 GMACs = 35.2 GFLOP, ×2 for LoRA training
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 FLOP/s by device-name fragment (SXM parts)
NUM_CLASSES, SIZE = 10, 224
REPEATS = 3  # timed passes of `steps` steps each, one MFU value per pass


def peak_flops(device_name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16.items() if key in device_name), None)


def training_setup(batch: int, device: torch.device):
    from imlca.config import ExperimentConfig, from_dict
    from imlca.models.heads import init_head
    from imlca.models.model import build_model

    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": "vit_base_patch16_224", "pretrained": False},  # never downloads
        "data": {"benchmark": "synthetic", "image_size": SIZE},
        "train": {"device": device.type, "precision": "bf16", "batch_size": batch, "epochs": 1}})
    model = build_model(cfg).to(device)
    head = nn.Parameter(init_head(NUM_CLASSES, model.dim, torch.Generator().manual_seed(0)).to(device))
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(batch, 3, SIZE, SIZE, device=device, generator=gen)  # [B, 3, 224, 224]
    targets = torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=gen)  # [B]
    return cfg, model, head, (images, targets)


def record_for_plan(backbone: str, model, batch: tuple[torch.Tensor, torch.Tensor], train_img_s: float,
                    precision: str, device: torch.device, steps: int = 5) -> None:
    """Hand the training throughput, with the fp32 feature throughput of the same batch, to `imlca plan`'s figure
    cache (planning/figures.py), keyed by this device's name."""
    from imlca.engine.loops import extract_features
    from imlca.planning.figures import record_gpu_training

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    extract_features(model, [batch], device)  # warm-up
    sync()
    start = time.perf_counter()
    extract_features(model, [batch] * steps, device)
    sync()
    feature_img_s = steps * len(batch[0]) / (time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    record_gpu_training(backbone, batch[0].shape[-1], precision, len(batch[0]), name, train_img_s, feature_img_s,
                        model.dim)


def timed_steps(model, head, batch_tensors, steps: int, cfg, device: torch.device) -> float:
    from imlca.engine.loops import train_task

    torch.cuda.synchronize()
    start = time.perf_counter()
    train_task(model, head, [batch_tensors] * steps, 0, cfg.train, device)
    torch.cuda.synchronize()
    return time.perf_counter() - start


def mfu(images_per_s: float, peak: float) -> float:
    return images_per_s * FLOP_PER_IMAGE / peak


def bench_gpu(settings: Settings) -> Measurement:
    if not torch.cuda.is_available():
        return Measurement([], skipped="no CUDA device (torch.cuda.is_available() is False)")
    batch, steps, warmup = (32, 5, 2) if settings.quick else (128, 30, 5)
    device = torch.device("cuda")
    cfg, model, head, batch_tensors = training_setup(batch, device)
    timed_steps(model, head, batch_tensors, warmup, cfg, device)
    seconds = [timed_steps(model, head, batch_tensors, steps, cfg, device) for _ in range(REPEATS)]
    rates = [steps * batch / s for s in seconds]
    record_for_plan("vit_base_patch16_224", model, batch_tensors, statistics.median(rates), "bf16", device)
    name = torch.cuda.get_device_name(device)
    details = {"device": name, "batch": batch, "steps": steps, "warmup_steps": warmup, "repeats": REPEATS,
               "images_per_s": rates, "flop_per_image": FLOP_PER_IMAGE}
    peak = peak_flops(name)
    if peak is None:
        return Measurement([], {"train": statistics.median(seconds)}, details=details,
                           skipped=f"peak bf16 FLOP/s of '{name}' is not known ({max(rates):.0f} img/s measured)")
    details["peak_flops"] = peak
    note = (f"{name}, batch {batch}, {REPEATS} × {steps} steps after {warmup} warm-up steps: "
            f"{min(rates):.0f}–{max(rates):.0f} img/s")
    return Measurement([mfu(rate, peak) for rate in rates], {"train": statistics.median(seconds)}, details=details,
                       note=note)
