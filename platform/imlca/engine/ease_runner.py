"""EASERunner: the ease family's worker — the TaskRunner's data, loaders and device, with a fresh adapter set per
task (models/adapters.py) and prototypes in every subspace.

A task draws a fresh adapter set (seeded by the task) and a cosine proxy head (uniform ±1/√D, σ = 1 learnable),
trains both with cross-entropy over the new classes only (SGD with train.momentum, or Adam; weight decay on all
of them; cosine from train.lr to train.min_lr over the epochs), the backbone frozen in eval mode and the adapter
dropout active. It returns the adapter set, the new classes' raw prototypes in every subspace that exists now
(the pre-trained model with `ease.pretrained_subspace`, then adapters 0..t: t + 1 (+1) passes over the task's
training images, test transform) and the new classes' statistics under the new adapter. The proxy head is
discarded, as theirs is.

Evaluation needs t + 1 (+1) backbone passes per test image. Stored adapters never change, so with
`ease.cache_features` the features of each (split, data task, subspace) are computed once and kept in memory:
at task t only adapter t's pass over every seen task's images and the older subspaces' pass over task t's images
are new (2t + 1 task-sets instead of (t + 1)²).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from imlca.config.ease import adapter_bottleneck
from imlca.core.ease import class_means, cosine_logits, reweighted_logits
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.metrics import task_accuracies, task_counts
from imlca.engine.central import part
from imlca.engine.loops import extract_features, require_finite, run_epochs
from imlca.engine.runner import TaskRunner
from imlca.engine.seeding import derive_seed, generator
from imlca.engine.task_output import TaskOutput
from imlca.errors import DivergenceError
from imlca.models.adapters import adapter_parameters, load_set, read_set, reset_set, set_enabled, sites
from imlca.models.model import IncrementalModel, build_adapter_model

Tensors = dict[str, torch.Tensor]
PTM = -1  # the subspace index of the plain pre-trained model


def adapter_sets(weights: Tensors) -> list[Tensors]:
    """`<j>.<key>` → [set 0, set 1, ...]."""
    count = len({k.split(".", 1)[0] for k in weights})
    return [part(weights, f"{j}.") for j in range(count)]


def proxy_optimizer(params: list[nn.Parameter], cfg, optimizer: str):
    train = cfg.train
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=train.epochs, eta_min=train.min_lr)


def ease_logits(cfg, feats: torch.Tensor, heads: list[torch.Tensor]) -> torch.Tensor:
    """[N, S·D] features and the completed prototypes per task → [N, C] (core/ease.py `reweighted_logits`)."""
    e = cfg.ease
    return reweighted_logits(feats, torch.cat(heads).to(feats), [len(h) for h in heads], e.alpha, e.beta,
                             e.pretrained_subspace)


class EASERunner(TaskRunner):
    def _build_model(self) -> IncrementalModel:
        e = self.cfg.ease
        return build_adapter_model(self.cfg, adapter_bottleneck(self.cfg.model.backbone, e.bottleneck), e.adapter_scale,
                                   e.adapter_dropout)

    def _make_space(self) -> None:
        self.cache: dict[tuple[str, int, int], tuple[Tensors, torch.Tensor, torch.Tensor]] = {}
        self.passes = 0  # backbone passes over a (split, task) of test images: what the cache saves

    def theta0(self) -> Tensors:
        return {}  # no adapter set before the first task

    def _subspaces(self, sets: list[Tensors]) -> list[int]:
        return ([PTM] if self.cfg.ease.pretrained_subspace else []) + list(range(len(sets)))

    def _use(self, sets: list[Tensors], index: int) -> None:
        if index == PTM:
            set_enabled(self.model.backbone, False)
        else:
            load_set(self.model.backbone, {k: v.to(self.device) for k, v in sets[index].items()})

    def train(self, task: int, given: Tensors) -> TaskOutput:
        cfg, split = self.cfg, self.benchmark.split
        lo, hi = split.task_range(task)
        reset_set(self.model.backbone, derive_seed(cfg.seed, "adapter", task))
        bound = 1 / math.sqrt(self.model.dim)  # their CosineLinear.reset_parameters
        gen = generator(cfg.seed, "head", task)
        head = nn.Parameter((torch.rand(hi - lo, self.model.dim, generator=gen) * 2 - 1).mul(bound).to(self.device))
        sigma = nn.Parameter(torch.ones((), device=self.device))
        optimizer, schedule = proxy_optimizer(adapter_parameters(self.model.backbone) + [head, sigma], cfg,
                                              cfg.ease.optimizer)
        torch.manual_seed(derive_seed(cfg.seed, "augment", task))
        loader = self._loader("train", [task], self.train_tf, shuffle_seed=derive_seed(cfg.seed, "shuffle", task))
        hear = None if self.on_epoch is None else lambda epoch, loss: self.on_epoch(task, epoch, loss)
        self.model.eval()
        for site in sites(self.model.backbone).values():
            site.adapter.train()  # dropout on the bottleneck
        try:
            losses = run_epochs(self.model, head, loader, lo, cfg.train, self.device, optimizer, schedule, hear,
                                logits_of=lambda features, weight: cosine_logits(features, weight, sigma))
        except DivergenceError as err:
            raise err.at_task(task) from None
        trained = read_set(self.model.backbone)
        require_finite(list(trained.values()), "the trained adapter holds NaN or inf", cfg.train, task,
                       cfg.train.epochs)
        sets = adapter_sets(given) + [trained]
        prototypes, bank = [], GaussianBank(self.model.dim, cfg.align.ridge)
        for index in self._subspaces(sets):
            self._use(sets, index)
            feats, targets = extract_features(self.model, self._loader("train", [task], self.test_tf), self.device)
            require_finite([feats], "the features of the new classes are not finite", cfg.train, task)
            prototypes.append(class_means(feats, targets, range(lo, hi)))
            if index == task:
                bank.update(feats.double(), targets)
        return TaskOutput(task, trained, torch.cat(prototypes, dim=1), bank.state_dict(), losses)

    def _features(self, part_name: str, data_task: int, sets: list[Tensors], index: int):
        """Features [N, D] and targets of one task's `part_name` images under subspace `index` (cached when the
        adapter set is the one cached)."""
        key = (part_name, data_task, index)
        used = sets[index] if index != PTM else {}
        if key in self.cache:
            kept, feats, targets = self.cache[key]
            if kept.keys() == used.keys() and all(torch.equal(kept[k], used[k]) for k in kept):
                return feats, targets
        self._use(sets, index)
        feats, targets = extract_features(self.model, self._loader(part_name, [data_task], self.test_tf),
                                          self.device)
        self.passes += 1
        if self.cfg.ease.cache_features:
            self.cache[key] = ({k: v.clone() for k, v in used.items()}, feats, targets)
        return feats, targets

    def _all_features(self, part_name: str, task: int, sets: list[Tensors]) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, S·D] features of the seen tasks' images under every subspace, [N] targets."""
        feats, targets = [], []
        for data_task in range(task + 1):
            pieces = [self._features(part_name, data_task, sets, index) for index in self._subspaces(sets)]
            feats.append(torch.cat([f for f, _ in pieces], dim=1))
            targets.append(pieces[0][1])
        return torch.cat(feats), torch.cat(targets)

    def evaluate(self, task: int, weights: Tensors, heads: dict[str, list[torch.Tensor]]) -> dict:
        sets = adapter_sets(weights)
        bounds = [self.benchmark.split.task_range(j) for j in range(task + 1)]
        parts = ["test"] + (["val"] if self.benchmark.val is not None else [])
        rows: dict = {"count": {}}
        for part_name in parts:
            feats, targets = self._all_features(part_name, task, sets)
            rows[part_name] = {m: task_accuracies(ease_logits(self.cfg, feats, ws).argmax(dim=1), targets, bounds)
                               for m, ws in heads.items()}
            rows["count"][part_name] = task_counts(targets, bounds)
        return rows

    def robustness(self, weights: Tensors, heads: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        from imlca.engine.robustness import robustness_metrics

        sets = adapter_sets(weights)
        self.model.freeze_statistics()

        def predictor(ws: list[torch.Tensor]):
            @torch.no_grad()
            def predict_images(images: torch.Tensor) -> torch.Tensor:
                feats = []
                for index in self._subspaces(sets):
                    self._use(sets, index)
                    feats.append(self.model.features(images.to(self.device)))
                return ease_logits(self.cfg, torch.cat(feats, dim=1), ws).argmax(dim=1).cpu()
            return predict_images

        return robustness_metrics(self.cfg.robustness, {m: predictor(ws) for m, ws in heads.items()}, self.test_tf,
                                  self.benchmark.test, self.benchmark.split.positions, self.cfg.data.image_size,
                                  self.cfg.eval.batch_size)
