"""MergeState: the run's memory between tasks — θ0, the running merged adapter, the Gaussian bank, one head set
per method, the accuracy matrices. It merges, aligns and records; every update is applied once per task id.

Methods share one backbone trajectory (alignment touches only heads): `im` keeps the trained heads, `im_ca` aligns
them with λ = 0, `im_lca` with the configured λ (DESIGN §3).
"""
from __future__ import annotations

import torch

from imlca.config import ExperimentConfig, fingerprint
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.lca import align_heads
from imlca.core.merging import incremental_merge
from imlca.core.metrics import summary
from imlca.engine.runner import TaskOutput
from imlca.engine.seeding import generator

Tensors = dict[str, torch.Tensor]
METHOD_LAMBDA = {"im": None, "im_ca": lambda cfg: 0.0, "im_lca": lambda cfg: cfg.align.lam}


class MergeState:
    def __init__(self, cfg: ExperimentConfig, theta0: Tensors, dim: int):
        self.cfg, self.methods = cfg, cfg.align.methods
        self.theta0 = {k: v.detach().cpu().clone() for k, v in theta0.items()}
        self.merged: Tensors = {k: v.clone() for k, v in self.theta0.items()}
        self.bank = GaussianBank(dim, cfg.align.ridge)
        self.heads: dict[str, list[torch.Tensor]] = {m: [] for m in self.methods}
        self.acc: dict[str, list[list[float]]] = {m: [] for m in self.methods}
        self.align_loss: dict[str, list[float]] = {m: [] for m in self.methods}  # last-epoch loss per task
        self.train_loss: list[float] = []
        self.tasks_merged = 0  # tasks whose output is in merged/bank/heads

    def integrate(self, out: TaskOutput) -> tuple[Tensors, dict[str, list[torch.Tensor]]]:
        """Merge task `out.task`'s adapter, add its statistics and head, align every method's heads.

        Idempotent: an output for a task already integrated changes nothing (a retried delivery)."""
        if out.task > self.tasks_merged:
            raise ValueError(f"task {out.task} arrived before task {self.tasks_merged}")
        if out.task == self.tasks_merged:
            self._merge(out)
            self.tasks_merged += 1
        return self.merged, self.heads

    def _merge(self, out: TaskOutput) -> None:
        adapter = {k: v.detach().cpu() for k, v in out.adapter.items()}
        if out.task == 0:
            self.merged = {k: v.clone() for k, v in adapter.items()}  # θ_merged(0) is task 0's adapter
        else:
            self.merged = incremental_merge(self.theta0, self.merged, adapter, self.cfg.merge.rule,
                                            self.cfg.merge.alpha)
        self.bank.merge(GaussianBank.from_state_dict(out.statistics, self.cfg.align.ridge))
        self.train_loss.append(out.losses[-1])
        for method in self.methods:
            self.heads[method].append(out.head.detach().cpu().clone())
            self.align_loss[method].append(self._align(method, out.task))

    def _align(self, method: str, task: int) -> float:
        """Re-fit all seen heads of `method` on samples of the bank; NaN where nothing is aligned."""
        lam_of = METHOD_LAMBDA[method]
        if lam_of is None or task == 0:
            return float("nan")
        heads, a = self.heads[method], self.cfg.align
        classes = list(range(sum(len(h) for h in heads)))
        weight, losses = align_heads(torch.cat(heads), self.bank, classes, lam_of(self.cfg), a.samples_per_class,
                                     a.epochs, a.batch_size, a.lr, a.momentum, a.weight_decay,
                                     generator(self.cfg.seed, "align", task))
        self.heads[method] = list(weight.split([len(h) for h in heads]))
        return losses[-1]

    def record(self, task: int, rows: dict[str, list[float]]) -> dict:
        """Store accuracy row `task` of every method (once) and return the task's report."""
        for method in self.methods:
            if len(self.acc[method]) == task:
                self.acc[method].append([float(x) for x in rows[method]])
        return self.report(task)

    def report(self, task: int) -> dict:
        """Flat metrics after `task`: the run's method unprefixed, every method as `<method>/<metric>`."""
        out: dict = {"task": task}
        for method in self.methods:
            row = self.acc[method][task]
            metrics = {"A_t": sum(row) / len(row), **summary(self.acc[method][: task + 1]),
                       "align_loss": self.align_loss[method][task]}
            metrics.update({f"acc_{j}": value for j, value in enumerate(row)})
            out.update({f"{method}/{k}": v for k, v in metrics.items()})
            if method == self.cfg.align.method:
                out.update(metrics)
        out["train_loss"] = self.train_loss[task]
        return out

    # --- checkpoints: tensors for safetensors, the rest as JSON ----------------------------------------------------

    def state_dict(self) -> tuple[Tensors, dict]:
        tensors = {f"theta0.{k}": v for k, v in self.theta0.items()}
        tensors.update({f"merged.{k}": v for k, v in self.merged.items()})
        tensors.update({f"bank.{k}": v for k, v in self.bank.state_dict().items()})
        for method, heads in self.heads.items():
            tensors.update({f"heads.{method}.{t}": h for t, h in enumerate(heads)})
        meta = {"tasks_merged": self.tasks_merged, "acc": self.acc, "align_loss": self.align_loss,
                "train_loss": self.train_loss, "fingerprint": fingerprint(self.cfg), "methods": self.methods}
        return tensors, meta

    def load_state_dict(self, tensors: Tensors, meta: dict) -> None:
        def part(prefix: str) -> Tensors:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.theta0, self.merged = part("theta0."), part("merged.")
        self.bank = GaussianBank.from_state_dict(part("bank."), self.cfg.align.ridge)
        self.tasks_merged = meta["tasks_merged"]
        self.heads = {m: [part(f"heads.{m}.")[str(t)] for t in range(self.tasks_merged)] for m in self.methods}
        self.acc, self.align_loss = meta["acc"], meta["align_loss"]
        self.train_loss = meta["train_loss"]
