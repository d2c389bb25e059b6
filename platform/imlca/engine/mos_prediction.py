"""MOS's prediction on the worker (models/mos.py `_eval_cnn` l.357–415): features under every snapshot 0..t, the
prototype classifier on adapter 0's, self-refined retrieval over the head, the ensemble.

A task's evaluation heads are `heads["mos"]`: one tensor per task [n_j, 2D + 1] = [prototypes | head weight |
head bias] (the aligned head's rows of the task's classes). Among the weights, the snapshots are `<k>.<key>`
for adapter k. With `mos.reweight: every_forward` a stored adapter k ≥ 1 is the snapshot pulled n times toward the
mean of snapshots 0..k−1, n counted from the test batches it has seen (engine/mos_runner.py says why).
"""
from __future__ import annotations

import math

import torch

from imlca.core.ease import cosine_logits
from imlca.core.mos import ensemble, pulled, retrieve, snapshot_means
from imlca.core.slca import affine_logits
from imlca.models.adapters import load_set, sites

Tensors = dict[str, torch.Tensor]


def snapshot_sets(weights: Tensors) -> list[Tensors]:
    """The snapshots among the weights: `<k>.<key>` → [set 0, set 1, ...] (the other keys are train inputs)."""
    count = len({k.split(".", 1)[0] for k in weights if k.split(".", 1)[0].isdigit()})
    return [{key[len(f"{k}."):]: v for key, v in weights.items() if key.startswith(f"{k}.")} for k in range(count)]


def split_table(table: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[C, 2D + 1] → prototypes [C, D], head [C, D + 1]."""
    return table[:, :dim], table[:, dim:]


class MOSPredictor:
    def __init__(self, runner):
        self.runner = runner

    def pulls_before(self, task: int) -> list[int]:
        """Per adapter k ≤ task: in-place pulls it has had before task `task`'s evaluation (every_forward): one per
        block for each test batch of the evaluations after tasks k..task − 1."""
        r = self.runner
        m = r.cfg.mos
        if m.reweight != "every_forward" or m.adapter_momentum == 0:
            return [0] * (task + 1)
        blocks = len(sites(r.model.backbone))
        batches = [math.ceil(len(r.benchmark.view("test", range(j + 1), None)) / r.cfg.eval.batch_size)
                   for j in range(task)]
        return [0] + [blocks * sum(batches[k:]) for k in range(1, task + 1)]

    def _load(self, snapshot: Tensors, mean: Tensors, pulls: int | None) -> None:
        """Load a snapshot; with `pulls`, block l's adapter as pulled pulls + l + 1 times toward `mean`."""
        r = self.runner
        if pulls is None or not mean:
            return load_set(r.model.backbone, {k: v.to(r.device) for k, v in snapshot.items()})
        state = {}
        for layer, name in enumerate(sites(r.model.backbone)):
            for key, value in snapshot.items():
                if key.startswith(f"{name}."):
                    state[key] = pulled(value, mean[key], r.cfg.mos.adapter_momentum, pulls + layer + 1)
        load_set(r.model.backbone, {k: v.to(r.device) for k, v in state.items()})

    @torch.no_grad()
    def _batch(self, task: int, sets, means, tables, images, pulls: list[int] | None) -> dict[str, torch.Tensor]:
        """One batch of images → method → scores [B, C] (t + 1 backbone passes)."""
        r, m = self.runner, self.runner.cfg.mos
        feats = []
        for k, snapshot in enumerate(sets):
            self._load(snapshot, means[k], None if pulls is None else pulls[k])
            feats.append(r.model.features(images.to(r.device)))
        feats = torch.stack(feats, dim=1)  # [B, S, D]
        out = {}
        for method, (prototypes, head, class_task) in tables.items():
            original = cosine_logits(feats[:, 0], prototypes)  # the prototype classifier on adapter 0
            head_logits = affine_logits(feats, head)  # [B, S, C]
            final = retrieve(head_logits, class_task[original.argmax(dim=1)], class_task, m.retrieval_rounds)
            out[method] = ensemble(final, original, task) if m.ensemble else final
        return out

    def _tables(self, heads: dict[str, list[torch.Tensor]]):
        device, dim = self.runner.device, self.runner.model.dim
        tables = {}
        for method, per_task in heads.items():
            class_task = torch.cat([torch.full((len(h),), j) for j, h in enumerate(per_task)]).to(device)
            tables[method] = (*split_table(torch.cat(per_task).to(device), dim), class_task)
        return tables

    def scores(self, task: int, weights: Tensors, heads, loader) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """method → scores [N, C] of the loader's images, targets [N]."""
        r = self.runner
        sets = snapshot_sets(weights)
        means, tables = snapshot_means(sets), self._tables(heads)
        before = self.pulls_before(task) if r.cfg.mos.reweight == "every_forward" else None
        blocks = len(sites(r.model.backbone))
        r.model.freeze_statistics()
        scores, targets = {method: [] for method in heads}, []
        for b, (images, labels) in enumerate(loader):
            pulls = None if before is None else [n + b * blocks for n in before]
            for method, s in self._batch(task, sets, means, tables, images, pulls).items():
                scores[method].append(s.cpu())
            targets.append(labels)
        return {method: torch.cat(s) for method, s in scores.items()}, torch.cat(targets)

    def image_predictors(self, task: int, weights: Tensors, heads) -> dict:
        """method → images → predicted class, with the stored adapters as the last test pass left them."""
        r = self.runner
        sets = snapshot_sets(weights)
        means, tables = snapshot_means(sets), self._tables(heads)
        pulls = None
        if r.cfg.mos.reweight == "every_forward":
            after = self.pulls_before(task + 1)[: task + 1]
            pulls = [n - len(sites(r.model.backbone)) for n in after]  # block l: n + l + 1 ≤ the count reached
        r.model.freeze_statistics()

        def predictor(method: str):
            def predict_images(images: torch.Tensor) -> torch.Tensor:
                return self._batch(task, sets, means, tables, images, pulls)[method].argmax(dim=1).cpu()
            return predict_images
        return {method: predictor(method) for method in heads}
