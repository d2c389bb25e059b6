"""The two loops over images: LoRA + new-head training, and feature extraction. Plain torch."""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from imlca.config import TrainConfig
from imlca.errors import DivergenceError
from imlca.models.model import IncrementalModel


def autocast(device: torch.device, precision: str):
    """bf16 autocast on the training device, CUDA or CPU (on a CPU it is slower, but a bf16 config computes what it
    says wherever it runs)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_task(model: IncrementalModel, head: nn.Parameter, loader: DataLoader, offset: int, cfg: TrainConfig,
               device: torch.device, on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train LoRA (+LN) and the new head with cross-entropy over the new head only (labels − offset).

    SGD + momentum, cosine from lr to min_lr stepped per epoch. The backbone stays in eval mode (frozen BatchNorm
    statistics); only LoRA's dropout is in training mode (`IncrementalModel.train_adapters`). Returns the mean loss
    of each epoch; `on_epoch(epoch, mean loss)` hears each as it ends; a non-finite one raises DivergenceError
    naming the epoch.
    """
    params = model.trainable_parameters() + [head]
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs, eta_min=cfg.min_lr)
    model.train_adapters()
    return run_epochs(model, head, loader, offset, cfg, device, optimizer, schedule, on_epoch)


Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (features [B, D], head) → logits [B, n_t]


def run_epochs(model: IncrementalModel, head: nn.Parameter, loader: DataLoader, offset: int, cfg: TrainConfig,
               device: torch.device, optimizer: torch.optim.Optimizer, schedule, on_epoch=None,
               logits_of: Logits = lambda features, head: features @ head.T) -> list[float]:
    """cfg.epochs epochs of cross-entropy over the new head only (labels − offset), the schedule stepped per
    epoch, the model in the mode the caller set; → the mean loss of each epoch (DivergenceError on a non-finite
    one, naming the epoch)."""
    losses = []
    for epoch in range(cfg.epochs):
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device
        for images, targets in loader:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            with autocast(device, cfg.precision):
                logits = logits_of(model.features(images), head)  # [B, n_t]
            loss = F.cross_entropy(logits.float(), targets - offset)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.detach().double() * len(targets), count + len(targets)
        schedule.step()
        close_epoch(total, count, epoch, cfg, losses, on_epoch)
    return losses


def close_epoch(total: torch.Tensor, count: int, epoch: int, cfg: TrainConfig, losses: list[float],
                on_epoch: Callable[[int, float], None] | None) -> None:
    """The epoch's mean loss from its summed loss (one read per epoch: a NaN or inf of any step propagates into
    it, and stops the run here), appended to `losses` and passed to `on_epoch`."""
    mean = total.item() / max(count, 1)
    if not math.isfinite(mean):
        raise DivergenceError(f"the training loss is {mean}", diverging_lr_fix(cfg), epoch=epoch + 1)
    losses.append(mean)
    if on_epoch is not None:
        on_epoch(epoch, mean)


def diverging_lr_fix(cfg: TrainConfig) -> str:
    return f"lower train.lr (now {cfg.lr:g}), e.g. --set train.lr={cfg.lr / 10:g}"


def require_finite(tensors: list[torch.Tensor], what: str, cfg: TrainConfig, task: int,
                   epoch: int | None = None) -> None:
    """Stop with DivergenceError where a NaN or inf first appears, before it reaches the merge or the bank."""
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise DivergenceError(what, diverging_lr_fix(cfg), task, epoch)


@torch.no_grad()
def extract_features(model: IncrementalModel, loader: DataLoader,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """→ features float32 [N, D] and targets int64 [N], on the CPU, in loader order.

    Always fp32, whatever train.precision says: the statistics and the evaluation are computed in fp32 by the
    authors, and bf16 would round the features that the Gaussian bank and the accuracies are made of."""
    model.freeze_statistics()
    feats, labels = [], []
    for images, targets in loader:
        feats.append(model.features(images.to(device, non_blocking=True)).float().cpu())
        labels.append(targets)
    return torch.cat(feats), torch.cat(labels)
