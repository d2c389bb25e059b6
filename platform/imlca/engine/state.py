"""MergeState: the run's memory between tasks — θ0, the running merged adapter, the Gaussian bank, one head set
per method, the accuracy matrices. It merges, aligns and records; every update is applied once per task id.

Methods share one backbone trajectory (alignment touches only heads): `im` keeps the trained heads, `im_ca` aligns
them with λ = 0, `im_lca` with the configured λ (DESIGN §3).

MergeState also owns the checkpoint format (the key layout below, written by engine/checkpoint.py atomically):
`theta0.<key>`, `merged.<key>`, `bank.<key>`, `heads.<method>.<task>` tensors, the rest as JSON. The merge side
imports core and nothing heavier (no timm, peft or torchvision), so the light MergeActor stays light.
"""
from __future__ import annotations

from pathlib import Path

import torch

from imlca.config import ExperimentConfig, fingerprint
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.lca import align_heads
from imlca.core.merging import incremental_merge
from imlca.core.metrics import summary
from imlca.engine.checkpoint import (WrittenTensors, finish_checkpoint, latest_checkpoint, load_checkpoint,
                                    write_tensors)
from imlca.engine.seeding import generator
from imlca.engine.task_output import TaskOutput
from imlca.registries import ALIGN_LOSSES, MERGE_RULES, METHODS

Tensors = dict[str, torch.Tensor]
ALIGN_TERMS = {"loss": "align_loss", "ce": "align_ce", "spread": "align_spread"}  # align_heads key → report key


def align_lr(cfg: ExperimentConfig, method: str) -> float:
    """CA may have its own lr (the authors: 1e-2 for CA, 5e-3 for LCA)."""
    ca_lr = cfg.align.ca_lr
    return ca_lr if method == "im_ca" and ca_lr is not None else cfg.align.lr


def authors_terms(cfg: ExperimentConfig, method: str) -> dict:
    """The authors' optional alignment terms (`align.entropy_weight`, `align.logit_norm_temperature`) belong to
    LCA: their CA baseline aligns with neither (0d1bd01 lca.py:843-851)."""
    if METHODS[method].loss != "lca":
        return {}
    return {"entropy_weight": cfg.align.entropy_weight, "temperature": cfg.align.logit_norm_temperature}


class MergeState:
    def __init__(self, cfg: ExperimentConfig, theta0: Tensors, dim: int, bank: GaussianBank | None = None):
        """`bank`: one shared by the states that replay a recorded trajectory (a grouped trial's variants): its
        owner adds each task's statistics once and every state reads them (and the Cholesky factors it caches);
        such a state reads θ0 too, and owns only its heads, accuracies and losses."""
        self.cfg, self.methods = cfg, cfg.align.methods
        self.shared = bank is not None
        self.theta0 = dict(theta0) if self.shared else {k: v.detach().cpu().clone() for k, v in theta0.items()}
        self.merged: Tensors = dict(self.theta0) if self.shared else {k: v.clone() for k, v in self.theta0.items()}
        self.bank = bank if bank is not None else GaussianBank(dim, cfg.align.ridge)
        self.heads: dict[str, list[torch.Tensor]] = {m: [] for m in self.methods}
        self.acc: dict[str, list[list[float]]] = {m: [] for m in self.methods}
        self.val_acc: dict[str, list[list[float]]] = {m: [] for m in self.methods}  # with data.val_fraction > 0
        # last-epoch alignment loss and its two terms per task: method → "loss" | "ce" | "spread" → [task]
        self.align_loss: dict[str, dict[str, list[float]]] = {m: {k: [] for k in ALIGN_TERMS} for m in self.methods}
        self.train_loss: list[float] = []
        self.tasks_merged = 0  # tasks whose output is in merged/bank/heads

    def integrate(self, out: TaskOutput, merged: Tensors | None = None
                  ) -> tuple[Tensors, dict[str, list[torch.Tensor]]]:
        """Merge task `out.task`'s adapter, add its statistics (unless the bank is shared) and head, align every
        method's heads. `merged`: the merged adapter after this task, computed once for several states (a grouped
        trial's variants, which differ in `align.*` keys only) and taken as it is instead of merged again.

        Idempotent: an output for a task already integrated changes nothing (a retried delivery)."""
        if out.task > self.tasks_merged:
            raise ValueError(f"task {out.task} arrived before task {self.tasks_merged}")
        if out.task == self.tasks_merged:
            self._merge(out, merged)
            self.tasks_merged += 1
        return self.merged, self.heads

    def _merge(self, out: TaskOutput, merged: Tensors | None) -> None:
        adapter = {k: v.detach().cpu() for k, v in out.adapter.items()}
        if merged is not None:
            self.merged = merged
        elif out.task == 0:
            self.merged = {k: v.clone() for k, v in adapter.items()}  # θ_merged(0) is task 0's adapter
        else:
            rule = MERGE_RULES.load(self.cfg.merge.rule)
            self.merged = incremental_merge(self.theta0, self.merged, adapter, rule, self.cfg.merge.alpha)
        if not self.shared:
            self.bank.merge(GaussianBank.from_state_dict(out.statistics, self.cfg.align.ridge))
        self.train_loss.append(out.losses[-1])
        for method in self.methods:
            self.heads[method].append(out.head.detach().cpu().clone())
            for term, value in self._align(method, out.task).items():
                self.align_loss[method][term].append(value)

    def _align(self, method: str, task: int) -> dict[str, float]:
        """Re-fit all seen heads of `method` on samples of the bank → the last epoch's loss and terms (NaN where
        nothing is aligned)."""
        lam = METHODS[method].lam(self.cfg.align.lam)
        if lam is None or task == 0:
            return {term: float("nan") for term in ALIGN_TERMS}
        heads, a = self.heads[method], self.cfg.align
        sizes = [len(h) for h in heads]
        weight, history = align_heads(torch.cat(heads), self.bank, list(range(sum(sizes))), lam, a.samples_per_class,
                                      a.epochs, a.batch_size, align_lr(self.cfg, method), a.momentum,
                                      a.weight_decay, generator(self.cfg.seed, "align", task), task_sizes=sizes,
                                      loss=ALIGN_LOSSES.load(METHODS[method].loss), **authors_terms(self.cfg, method))
        self.heads[method] = list(weight.split(sizes))
        return {term: history[term][-1] for term in ALIGN_TERMS}

    def record(self, task: int, parts: dict[str, dict[str, list[float]]]) -> dict:
        """Store accuracy row `task` of every method (once) for "test" and, with a validation split, "val"; return
        the task's report."""
        for part, acc in (("test", self.acc), ("val", self.val_acc)):
            for method in self.methods:
                if part in parts and len(acc[method]) == task:
                    acc[method].append([float(x) for x in parts[part][method]])
        return self.report(task)

    def report(self, task: int) -> dict:
        """Flat metrics after `task`: the run's method unprefixed, every method as `<method>/<metric>`; with a
        validation split the same again as `val_<metric>` (`val_avg_acc`, `<method>/val_acc_0`, ...)."""
        out: dict = {"task": task}
        for method in self.methods:
            metrics = {**_accuracy_metrics(self.acc[method][: task + 1]),
                       **{key: self.align_loss[method][term][task] for term, key in ALIGN_TERMS.items()}}
            if len(self.val_acc[method]) > task:
                val = _accuracy_metrics(self.val_acc[method][: task + 1])
                metrics.update({f"val_{k}": v for k, v in val.items()})
            out.update({f"{method}/{k}": v for k, v in metrics.items()})
            if method == self.cfg.align.method:
                out.update(metrics)
        out["train_loss"] = self.train_loss[task]
        return out

    # --- checkpoints: tensors for safetensors, the rest as JSON ----------------------------------------------------

    def _tensors(self) -> Tensors:
        """Final once `integrate` has returned: `record` changes only the JSON part."""
        tensors = {f"theta0.{k}": v for k, v in self.theta0.items()}
        tensors.update({f"merged.{k}": v for k, v in self.merged.items()})
        tensors.update({f"bank.{k}": v for k, v in self.bank.class_tensors().items()})  # no copy of Σxxᵀ
        for method, heads in self.heads.items():
            tensors.update({f"heads.{method}.{t}": h for t, h in enumerate(heads)})
        return tensors

    def _meta(self) -> dict:
        return {"tasks_merged": self.tasks_merged, "acc": self.acc, "val_acc": self.val_acc,
                "align_loss": self.align_loss, "train_loss": self.train_loss, "fingerprint": fingerprint(self.cfg),
                "methods": self.methods}

    def load_state_dict(self, tensors: Tensors, meta: dict) -> None:
        self.theta0, self.merged = _part(tensors, "theta0."), _part(tensors, "merged.")
        self.bank = GaussianBank.from_state_dict(_part(tensors, "bank."), self.cfg.align.ridge)
        self.tasks_merged = meta["tasks_merged"]
        self.heads = {m: [_part(tensors, f"heads.{m}.")[str(t)] for t in range(self.tasks_merged)]
                      for m in self.methods}
        self.acc, self.align_loss = meta["acc"], meta["align_loss"]
        self.val_acc = meta.get("val_acc", {m: [] for m in self.methods})  # absent in checkpoints before it
        self.train_loss = meta["train_loss"]

    def write_tensors(self, checkpoint_dir: Path, task: int) -> WrittenTensors:
        """The first half of `save(task)`, once task `task` is integrated (a MergeActor runs it while the task is
        evaluated)."""
        return write_tensors(checkpoint_dir, task, self._tensors())

    def save(self, checkpoint_dir: Path, task: int, written: WrittenTensors | None = None) -> Path:
        """The state after `task`, as `<checkpoint_dir>/task-NNN` (atomic); `written`: its tensors, already
        written by `write_tensors` after this task's integration."""
        return finish_checkpoint(written or self.write_tensors(checkpoint_dir, task), self._meta())

    def resume(self, checkpoint_dir: Path | None) -> list[dict]:
        """Load the latest complete checkpoint (if any); returns the reports of the finished tasks."""
        latest = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
        if latest is not None:
            self.load_state_dict(*load_checkpoint(latest, fingerprint(self.cfg)))
        return [self.report(task) for task in range(len(self.acc[self.methods[0]]))]

    @classmethod
    def from_checkpoint(cls, cfg: ExperimentConfig, folder: Path) -> MergeState:
        """The state saved in one checkpoint folder (for exporting a run's artifacts)."""
        tensors, meta = load_checkpoint(folder)
        bank = GaussianBank.from_state_dict(_part(tensors, "bank."), cfg.align.ridge)
        state = cls(cfg, _part(tensors, "theta0."), bank.dim)
        state.load_state_dict(tensors, meta)
        return state


def _accuracy_metrics(acc: list[list[float]]) -> dict[str, float]:
    """A_t, the summary (Ā, last accuracy, forgetting) and acc_j of the newest row of an accuracy matrix."""
    row = acc[-1]
    return {"A_t": sum(row) / len(row), **summary(acc), **{f"acc_{j}": value for j, value in enumerate(row)}}


def _part(tensors: Tensors, prefix: str) -> Tensors:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
