"""CentralState: what every family's central state keeps beside its own tensors — the accuracy matrices (test
and validation), the test samples per task, the last alignment loss per task, the training loss — and the
checkpoint around them (the key layout of `_tensors`, written by engine/checkpoint.py atomically, the rest JSON).

A family subclasses it with `_integrate(out)` (its central work, applied once per task id), `evaluation()` (the
weights and heads a task is evaluated with), `train_input()`, and its tensors (`_own_tensors` / `_load_own`).
It imports core and nothing heavier (no timm, peft or torchvision), so the central actor stays light.
"""
from __future__ import annotations

from pathlib import Path

import torch

from imlca.config import ExperimentConfig, fingerprint
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.metrics import average_incremental_accuracy_weighted, summary
from imlca.engine.checkpoint import (WrittenTensors, finish_checkpoint, latest_checkpoint, load_checkpoint,
                                    write_tensors)
from imlca.engine.task_output import TaskOutput

Tensors = dict[str, torch.Tensor]
Heads = dict[str, list[torch.Tensor]]
ALIGN_TERMS = {"loss": "align_loss", "ce": "align_ce", "spread": "align_spread"}  # alignment key → report key


class CentralState:
    def __init__(self, cfg: ExperimentConfig, dim: int, bank: GaussianBank | None = None):
        """`bank`: one shared by the states that replay a recorded trajectory (a grouped trial's variants): its
        owner adds each task's statistics once and every state reads them (and the Cholesky factors it caches)."""
        self.cfg, self.methods, self.dim = cfg, cfg.align.methods, dim
        self.shared = bank is not None
        self.bank = bank if bank is not None else GaussianBank(dim, cfg.align.ridge)
        self.heads: Heads = {m: [] for m in self.methods}
        self.acc: dict[str, list[list[float]]] = {m: [] for m in self.methods}
        self.val_acc: dict[str, list[list[float]]] = {m: [] for m in self.methods}  # with data.val_fraction > 0
        self.counts: dict[str, list[int]] = {}  # "test" | "val" → samples of each task seen so far
        # last-epoch alignment loss and its two terms per task: method → "loss" | "ce" | "spread" → [task]
        self.align_loss: dict[str, dict[str, list[float]]] = {m: {k: [] for k in ALIGN_TERMS} for m in self.methods}
        self.train_loss: list[float] = []
        self.tasks_merged = 0  # tasks whose output is integrated

    # --- the family's part ------------------------------------------------------------------------------------

    def _integrate(self, out: TaskOutput, **given) -> None:
        raise NotImplementedError

    def evaluation(self) -> tuple[Tensors, Heads]:
        raise NotImplementedError

    def train_input(self) -> Tensors:
        return self.evaluation()[0]

    def final(self) -> tuple[Tensors, Heads]:
        return self.evaluation()

    def _own_tensors(self) -> Tensors:
        raise NotImplementedError

    def _load_own(self, tensors: Tensors, meta: dict) -> None:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------------

    def integrate(self, out: TaskOutput, **given) -> tuple[Tensors, Heads]:
        """Integrate task `out.task` once (a retried delivery changes nothing); → what it is evaluated with.
        `given`: what several states replaying one trajectory compute once for all (passed to `_integrate`)."""
        if out.task > self.tasks_merged:
            raise ValueError(f"task {out.task} arrived before task {self.tasks_merged}")
        if out.task == self.tasks_merged:
            if not self.shared:  # a shared bank's owner adds the statistics once
                self.bank.merge(GaussianBank.from_state_dict(out.statistics, self.cfg.align.ridge))
            self.train_loss.append(out.losses[-1])
            self._integrate(out, **given)
            self.tasks_merged += 1
        return self.evaluation()

    def record(self, task: int, parts: dict) -> dict:
        """Store accuracy row `task` of every method (once) for "test" and, with a validation split, "val"
        (`parts["count"]`: the samples per seen task of each); return the task's report."""
        for part, acc in (("test", self.acc), ("val", self.val_acc)):
            for method in self.methods:
                if part in parts and len(acc[method]) == task:
                    acc[method].append([float(x) for x in parts[part][method]])
        for part, counts in parts.get("count", {}).items():
            if len(self.counts.get(part, [])) == task:
                self.counts[part] = [int(n) for n in counts]
        return self.report(task)

    def _metrics(self, acc: list[list[float]], part: str) -> dict[str, float]:
        """A_t, Ā task-balanced (the paper's) and sample-weighted (PILOT's), last accuracy, both forgettings, acc_j."""
        row = acc[-1]
        out = {"A_t": sum(row) / len(row), **summary(acc), **{f"acc_{j}": value for j, value in enumerate(row)}}
        counts = self.counts.get(part, [])
        if len(counts) >= len(acc):
            out["avg_acc_weighted"] = average_incremental_accuracy_weighted(acc, counts)
        return out

    def report(self, task: int) -> dict:
        """Flat metrics after `task`: the run's method unprefixed, every method as `<method>/<metric>`; with a
        validation split the same again as `val_<metric>` (`val_avg_acc`, `<method>/val_acc_0`, ...)."""
        out: dict = {"task": task}
        for method in self.methods:
            metrics = {**self._metrics(self.acc[method][: task + 1], "test"),
                       **{key: self.align_loss[method][term][task] for term, key in ALIGN_TERMS.items()}}
            if len(self.val_acc[method]) > task:
                val = self._metrics(self.val_acc[method][: task + 1], "val")
                metrics.update({f"val_{k}": v for k, v in val.items()})
            out.update({f"{method}/{k}": v for k, v in metrics.items()})
            if method == self.cfg.align.method:
                out.update(metrics)
        out["train_loss"] = self.train_loss[task]
        return out

    # --- checkpoints: tensors for safetensors, the rest as JSON ----------------------------------------------

    def _tensors(self) -> Tensors:
        """Final once `integrate` has returned: `record` changes only the JSON part."""
        tensors = {f"bank.{k}": v for k, v in self.bank.class_tensors().items()}  # no stacked copy of Σxxᵀ
        for method, heads in self.heads.items():
            tensors.update({f"heads.{method}.{t}": h for t, h in enumerate(heads)})
        return {**tensors, **self._own_tensors()}

    def _meta(self) -> dict:
        return {"tasks_merged": self.tasks_merged, "acc": self.acc, "val_acc": self.val_acc,
                "counts": self.counts, "align_loss": self.align_loss, "train_loss": self.train_loss,
                "fingerprint": fingerprint(self.cfg), "methods": self.methods, "family": self.cfg.align.family}

    def load_state_dict(self, tensors: Tensors, meta: dict) -> None:
        self.bank = GaussianBank.from_state_dict(part(tensors, "bank."), self.cfg.align.ridge)
        self.tasks_merged = meta["tasks_merged"]
        self.heads = {m: [part(tensors, f"heads.{m}.")[str(t)] for t in range(self.tasks_merged)]
                      for m in self.methods}
        self.acc, self.align_loss = meta["acc"], meta["align_loss"]
        self.val_acc = meta.get("val_acc", {m: [] for m in self.methods})  # absent in checkpoints before it
        self.counts = meta.get("counts", {})
        self.train_loss = meta["train_loss"]
        self._load_own(tensors, meta)

    def write_tensors(self, checkpoint_dir: Path, task: int) -> WrittenTensors:
        """The first half of `save(task)`, once task `task` is integrated (the central actor runs it while the task
        is evaluated)."""
        return write_tensors(checkpoint_dir, task, self._tensors())

    def save(self, checkpoint_dir: Path, task: int, written: WrittenTensors | None = None) -> Path:
        """The state after `task`, as `<checkpoint_dir>/task-NNN` (atomic); `written`: its tensors, already
        written by `write_tensors` after this task's integration."""
        return finish_checkpoint(written or self.write_tensors(checkpoint_dir, task), self._meta())

    INITIAL = "theta0."  # the checkpoint prefix of the tensors a state is built from (`from_checkpoint`)

    @classmethod
    def from_checkpoint(cls, cfg: ExperimentConfig, folder: Path) -> "CentralState":
        """The state saved in one checkpoint folder (for exporting a run's artifacts)."""
        tensors, meta = load_checkpoint(folder)
        bank = GaussianBank.from_state_dict(part(tensors, "bank."), cfg.align.ridge)
        state = cls(cfg, part(tensors, cls.INITIAL), bank.dim)
        state.load_state_dict(tensors, meta)
        return state

    def resume(self, checkpoint_dir: Path | None) -> list[dict]:
        """Load the latest complete checkpoint (if any); returns the reports of the finished tasks."""
        latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
        if latest is not None:
            self.load_state_dict(*load_checkpoint(latest, fingerprint(self.cfg)))
        return [self.report(task) for task in range(len(self.acc[self.methods[0]]))]


def part(tensors: Tensors, prefix: str) -> Tensors:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def prefixed(tensors: Tensors, prefix: str) -> Tensors:
    """The inverse of `part`."""
    return {f"{prefix}{k}": v for k, v in tensors.items()}
