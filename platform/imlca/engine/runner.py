"""TaskRunner: everything that touches images for one run — a model, the benchmark, a device.

`train` fine-tunes one task from the merged adapter and returns only what the merge step needs; `evaluate`
scores head sets on the merged backbone. The in-process protocol and the Ray TaskWorker both call these.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from imlca.config import ExperimentConfig
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.metrics import predict, task_accuracies, task_counts
from imlca.data import load_benchmark
from imlca.data.cached_loader import CachedBenchmark, loader_workers, open_caches
from imlca.data.remote import check_remote, remote_root
from imlca.data.remote_decoded import decoded_copy
from imlca.data.transforms import build_transform
from imlca.engine.loops import extract_features, require_finite, train_task
from imlca.engine.seeding import derive_seed, generator
from imlca.engine.task_output import TaskOutput
from imlca.errors import DivergenceError, ResourceError
from imlca.models.backbone import read_checkpoint
from imlca.models.heads import init_head
from imlca.models.lora import scaling
from imlca.models.model import build_model
from imlca.registries import MERGE_SPACES

Tensors = dict[str, torch.Tensor]


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ResourceError("train.device is 'cuda' but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def preflight(cfg: ExperimentConfig) -> None:
    """Everything that can be refused before any training: device, dataset (every image opens), checkpoint."""
    resolve_device(cfg.train.device)
    if remote_root(cfg.data):  # checked here, copied by the nodes that train on it (imlca.data.remote)
        check_remote(cfg.data)
        if cfg.data.remote_decoded:  # a stale or mislabelled decoded copy is refused before any trial starts
            decoded_copy(cfg.data)
        return _check_checkpoint(cfg)
    benchmark = load_benchmark(cfg.data, cfg.seed)
    benchmark.train.verify()
    benchmark.test.verify()
    if cfg.data.pipeline == "cached":  # decodes every image once: a truncated file is refused here, not mid-run
        open_caches(cfg, benchmark)
    _check_checkpoint(cfg)


def _check_checkpoint(cfg: ExperimentConfig) -> None:
    if cfg.model.checkpoint is not None:
        read_checkpoint(cfg.model.checkpoint)


EpochCallback = Callable[[int, int, float], None]  # (task, epoch, mean training loss of the epoch)


class TaskRunner:
    def __init__(self, cfg: ExperimentConfig, on_epoch: EpochCallback | None = None):
        self.cfg, self.on_epoch = cfg, on_epoch
        self.device = resolve_device(cfg.train.device)
        self.benchmark = load_benchmark(cfg.data, cfg.seed)
        self.model = self._build_model().to(self.device)
        self.space = self._make_space()
        mean, std = (self.model.backbone.pretrained_cfg.get(k, (0.5,) * 3) for k in ("mean", "std"))
        self.train_tf = build_transform(cfg.data, True, mean, std)
        self.test_tf = build_transform(cfg.data, False, mean, std)
        self.cached = CachedBenchmark(cfg, self.benchmark, self.device, mean, std) \
            if cfg.data.pipeline == "cached" else None
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if cfg.train.compile:
            self.model.backbone.compile()  # in place: parameter names (and the merge spaces' keys) stay the same

    # --- what the IM family trains (a family's worker overrides these: engine/slca_runner.py) -----------------

    def _build_model(self):
        return build_model(self.cfg)  # the backbone with LoRA at θ0

    def _make_space(self):
        return MERGE_SPACES.load(self.cfg.merge.space)(self.model, scaling(self.cfg.lora))

    def _new_head(self, num_classes: int, task: int) -> torch.Tensor:
        return init_head(num_classes, self.model.dim, generator(self.cfg.seed, "head", task))  # [n_t, D]

    def _fit(self, head: nn.Parameter, loader: DataLoader, offset: int, hear) -> list[float]:
        return train_task(self.model, head, loader, offset, self.cfg.train, self.device, hear)

    def _predict(self, features: torch.Tensor, heads: list[torch.Tensor]) -> torch.Tensor:
        return predict(features, heads)

    @property
    def num_tasks(self) -> int:
        return self.benchmark.split.num_tasks

    def theta0(self) -> Tensors:
        return self.space.initial()

    def _loader(self, part: str, tasks, transform, shuffle_seed: int | None = None) -> DataLoader:
        batch = self.cfg.train.batch_size if shuffle_seed is not None else self.cfg.eval.batch_size
        if self.cached is not None:
            return self.cached.loader(part, tasks, transform is self.train_tf, batch, shuffle_seed)
        gen = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
        return DataLoader(self.benchmark.view(part, tasks, transform), batch_size=batch,
                          shuffle=shuffle_seed is not None, generator=gen, num_workers=loader_workers(self.cfg),
                          pin_memory=self.device.type == "cuda")

    def train(self, task: int, merged: Tensors) -> TaskOutput:
        cfg, split = self.cfg, self.benchmark.split
        self.space.load(self.model, {k: v.to(self.device) for k, v in merged.items()})
        lo, hi = split.task_range(task)
        head = nn.Parameter(self._new_head(hi - lo, task).to(self.device))
        torch.manual_seed(derive_seed(cfg.seed, "augment", task))  # the transforms draw from the global RNG
        loader = self._loader("train", [task], self.train_tf, shuffle_seed=derive_seed(cfg.seed, "shuffle", task))
        hear = None if self.on_epoch is None else lambda epoch, loss: self.on_epoch(task, epoch, loss)
        try:
            losses = self._fit(head, loader, lo, hear)
        except DivergenceError as err:
            raise err.at_task(task) from None
        adapter = {k: v.detach().cpu() for k, v in self.space.read(self.model).items()}
        require_finite([head.detach(), *adapter.values()], "the trained adapter or head holds NaN or inf",
                       cfg.train, task, cfg.train.epochs)
        feats, targets = extract_features(self.model, self._loader("train", [task], self.test_tf), self.device)
        require_finite([feats], "the features of the new classes' Gaussian statistics are not finite", cfg.train,
                       task)
        bank = GaussianBank(self.model.dim, cfg.align.ridge)
        bank.update(feats.double(), targets)
        return TaskOutput(task, adapter, head.detach().cpu().clone(), bank.state_dict(), losses)

    def evaluate(self, task: int, merged: Tensors, heads: dict[str, list[torch.Tensor]]) -> dict:
        """"test" (and "val" with a validation split) → method → a[task][j] for j ≤ task: argmax over all seen
        classes of the method's heads; "count" → part → samples of each task j ≤ task."""
        self.space.load(self.model, {k: v.to(self.device) for k, v in merged.items()})
        bounds = [self.benchmark.split.task_range(j) for j in range(task + 1)]
        parts = ["test"] + (["val"] if self.benchmark.val is not None else [])
        rows: dict = {"count": {}}
        for part in parts:
            feats, targets = extract_features(self.model, self._loader(part, range(task + 1), self.test_tf),
                                              self.device)
            rows[part] = {method: task_accuracies(self._predict(feats, weights), targets, bounds)
                          for method, weights in heads.items()}
            rows["count"][part] = task_counts(targets, bounds)
        return rows

    def robustness(self, merged: Tensors, heads: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """Robustness metrics of every method on the merged backbone (after the last task)."""
        from imlca.engine.robustness import robustness_metrics

        self.space.load(self.model, {k: v.to(self.device) for k, v in merged.items()})
        self.model.freeze_statistics()

        def predictor(weights: list[torch.Tensor]):
            @torch.no_grad()
            def predict_images(images: torch.Tensor) -> torch.Tensor:  # fp32, as the evaluation
                return self._predict(self.model.features(images.to(self.device)), weights).cpu()
            return predict_images

        predictors = {m: predictor(ws) for m, ws in heads.items()}
        return robustness_metrics(self.cfg.robustness, predictors, self.test_tf, self.benchmark.test,
                                  self.benchmark.split.positions, self.cfg.data.image_size, self.cfg.eval.batch_size)
