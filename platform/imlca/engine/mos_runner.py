"""MOSRunner: the mos family's worker — the TaskRunner's data, loaders and device, with one adapter set carried
across tasks (models/adapters.py), a linear head over every class and self-refined retrieval over the snapshots.

What travels (`given`, from engine/mos_state.py): `current.<key>` the carried adapter, `mean.<key>` the mean of
the earlier snapshots (from task 1), `adapter0.<key>` the first snapshot (from task 1), `head` [C, D + 1] (every
class of the benchmark, bias last) and `old_means` [C_old, D] (from task 1). A task returns `snapshot.<key>` (the
adapter after training), `current.<key>` (the adapter it hands on), `prototypes` [n_t, D], the head and the new
classes' statistics.

`mos.reweight: every_forward` (the authors' code) pulls the adapter toward `mean` in place before every block of
every forward (models/adapters.py `pulled_on_every_block`): while training, while the statistics are taken (so
the adapter handed on is pulled further than its snapshot), and on the stored adapters at test time. A stored
adapter k ≥ 1 is therefore not frozen: it is pulled 1 + l times more at block l of each test batch, for ever.
Its state is a function of how many test batches it has seen (core/mos.py `pulled`), which this worker counts
from the split (one test pass per task, `eval.batch_size`, as the authors evaluate), so no state of the worker
travels. Hence no feature cache, unlike EASE: every evaluation costs t + 1 backbone passes per image (the
adapter-0 pass serves both the prototype classifier and retrieval). A validation pass starts from the same
state as the test pass and is not counted. `once_per_step` pulls only after each optimiser step.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from imlca.config.mos import mos_bottleneck
from imlca.core.ease import class_means
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.metrics import task_accuracies, task_counts
from imlca.core.mos import masked_logits, orth_loss
from imlca.data.cached_loader import loader_workers
from imlca.engine.central import part, prefixed
from imlca.engine.loops import autocast, close_epoch, extract_features, require_finite
from imlca.engine.mos_prediction import MOSPredictor
from imlca.engine.runner import TaskRunner
from imlca.engine.seeding import derive_seed, generator
from imlca.engine.task_output import TaskOutput
from imlca.errors import DivergenceError
from imlca.models.adapters import (adapter_parameters, load_set, pull_set, pulled_on_every_block, read_set,
                                   reset_set, sites)
from imlca.models.heads import init_head
from imlca.models.model import IncrementalModel, build_adapter_model

Tensors = dict[str, torch.Tensor]


def mos_optimizer(adapters: list[nn.Parameter], head: nn.Parameter, train, head_lr_scale: float):
    """SGD (train.momentum, train.weight_decay on both groups), the adapter at train.lr and the head at
    head_lr_scale·train.lr, cosine to train.min_lr over the epochs (models/mos.py l.118–150)."""
    groups = [{"params": adapters, "lr": train.lr}, {"params": [head], "lr": train.lr * head_lr_scale}]
    optimizer = torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train.epochs, eta_min=train.min_lr)


def fit_mos(model, head: nn.Parameter, loader, known: int, seen: int, old_means, mean: Tensors, train, mos,
            device, on_epoch=None) -> list[float]:
    """train.epochs epochs of CE over the masked head + the orthogonality loss (models/mos.py `_init_train`
    l.152–196), pulling the adapter toward `mean` after every step (and, every_forward, before every block);
    the caller sets the modes. → the mean loss of each epoch (DivergenceError on a non-finite one)."""
    backbone = model.backbone
    optimizer, schedule = mos_optimizer(adapter_parameters(backbone), head, train, mos.head_lr_scale)
    pull = bool(mean) and mos.adapter_momentum > 0
    every = pulled_on_every_block(backbone, mean, mos.adapter_momentum) \
        if pull and mos.reweight == "every_forward" else contextlib.nullcontext()
    losses = []
    with every:
        for epoch in range(train.epochs):
            total, count = torch.zeros((), dtype=torch.float64, device=device), 0
            for images, targets in loader:
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                with autocast(device, train.precision):
                    feats = model.features(images)
                feats = feats.to(torch.promote_types(feats.dtype, torch.float32))  # bf16 → fp32, fp64 stays
                loss = F.cross_entropy(masked_logits(feats, head, known, seen), targets) \
                    + orth_loss(feats, old_means, mos.reg, mos.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if pull:
                    pull_set(backbone, mean, mos.adapter_momentum)  # `adapter_merge` l.174–175
                total, count = total + loss.detach().double() * len(targets), count + len(targets)
            schedule.step()
            close_epoch(total, count, epoch, train, losses, on_epoch)
    return losses


class MOSRunner(TaskRunner):
    def _build_model(self) -> IncrementalModel:
        m = self.cfg.mos
        return build_adapter_model(self.cfg, mos_bottleneck(self.cfg.model.backbone, m.bottleneck), m.adapter_scale,
                                   m.adapter_dropout)

    def _make_space(self) -> None:
        self.predictor = MOSPredictor(self)

    def _on_device(self, tensors: Tensors) -> Tensors:
        return {k: v.to(self.device) for k, v in tensors.items()}

    def theta0(self) -> Tensors:
        """The adapter drawn from the run's seed and the head over every class: trunc-normal(0.02), bias 0."""
        reset_set(self.model.backbone, derive_seed(self.cfg.seed, "adapter", 0))
        classes = self.benchmark.split.task_range(self.num_tasks - 1)[1]
        weight = init_head(classes, self.model.dim, generator(self.cfg.seed, "head", 0))
        return {**prefixed(read_set(self.model.backbone), "current."),
                "head": torch.cat([weight, torch.zeros(classes, 1)], dim=1)}

    def train(self, task: int, given: Tensors) -> TaskOutput:
        cfg, backbone = self.cfg, self.model.backbone
        lo, hi = self.benchmark.split.task_range(task)
        load_set(backbone, self._on_device(part(given, "current.")))
        mean = self._on_device(part(given, "mean."))
        head = nn.Parameter(given["head"].to(self.device).clone())
        old = given["old_means"].to(self.device) if "old_means" in given else None
        torch.manual_seed(derive_seed(cfg.seed, "augment", task))
        loader = self._loader("train", [task], self.train_tf, shuffle_seed=derive_seed(cfg.seed, "shuffle", task))
        hear = None if self.on_epoch is None else lambda epoch, loss: self.on_epoch(task, epoch, loss)
        self.model.eval()
        for site in sites(backbone).values():
            site.adapter.train()  # dropout on the bottleneck (their backbone.train(); BatchNorm stays frozen)
        try:
            losses = fit_mos(self.model, head, loader, lo, hi, old, mean, cfg.train, cfg.mos, self.device, hear)
        except DivergenceError as err:
            raise err.at_task(task) from None
        snapshot = read_set(backbone)  # `adapter_update` l.112, before the statistics
        require_finite([head.detach(), *snapshot.values()], "the trained adapter or head holds NaN or inf",
                       cfg.train, task, cfg.train.epochs)
        bank = self._statistics(task, mean)
        current = read_set(backbone)
        load_set(backbone, self._on_device(part(given, "adapter0.") or snapshot))  # none before: this is adapter 0
        feats, targets = extract_features(self.model, self._loader("train", [task], self.test_tf), self.device)
        adapter = {**prefixed(snapshot, "snapshot."), **prefixed(current, "current."),
                   "prototypes": class_means(feats, targets, range(lo, hi))}  # `replace_fc` l.51–72
        return TaskOutput(task, adapter, head.detach().cpu().clone(), bank.state_dict(), losses)

    @torch.no_grad()
    def _statistics(self, task: int, mean: Tensors) -> GaussianBank:
        """The new classes' statistics under the adapter being trained, one class at a time in batches of
        3·train.batch_size (models/mos.py `_compute_mean` l.198–216); every_forward keeps pulling it."""
        cfg, m = self.cfg, self.cfg.mos
        lo, hi = self.benchmark.split.task_range(task)
        view = self.benchmark.view("train", [task], self.test_tf)
        bank = GaussianBank(self.model.dim, cfg.align.ridge)
        every = mean and m.adapter_momentum > 0 and m.reweight == "every_forward"
        with pulled_on_every_block(self.model.backbone, mean, m.adapter_momentum) if every \
                else contextlib.nullcontext():
            for c in range(lo, hi):
                loader = DataLoader(Subset(view, np.flatnonzero(view.targets == c).tolist()),
                                    batch_size=3 * cfg.train.batch_size, num_workers=loader_workers(cfg))
                feats, targets = extract_features(self.model, loader, self.device)
                require_finite([feats], "the features of the new classes' Gaussian statistics are not finite",
                               cfg.train, task)
                bank.update(feats.double(), targets)
        return bank

    def evaluate(self, task: int, weights: Tensors, heads: dict[str, list[torch.Tensor]]) -> dict:
        bounds = [self.benchmark.split.task_range(j) for j in range(task + 1)]
        parts = ["test"] + (["val"] if self.benchmark.val is not None else [])
        rows: dict = {"count": {}}
        for part_name in parts:
            loader = self._loader(part_name, range(task + 1), self.test_tf)
            scores, targets = self.predictor.scores(task, weights, heads, loader)
            rows[part_name] = {m: task_accuracies(s.argmax(dim=1), targets, bounds) for m, s in scores.items()}
            rows["count"][part_name] = task_counts(targets, bounds)
        return rows

    def robustness(self, weights: Tensors, heads: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        from imlca.engine.robustness import robustness_metrics

        predictors = self.predictor.image_predictors(self.num_tasks - 1, weights, heads)
        return robustness_metrics(self.cfg.robustness, predictors, self.test_tf, self.benchmark.test,
                                  self.benchmark.split.positions, self.cfg.data.image_size, self.cfg.eval.batch_size)
