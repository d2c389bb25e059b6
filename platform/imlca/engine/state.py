"""MergeState: the run's memory between tasks — θ0, the running merged adapter, the Gaussian bank, one head set
per method, the accuracy matrices. It merges, aligns and records; every update is applied once per task id.

Methods share one backbone trajectory (alignment touches only heads): `im` keeps the trained heads, `im_ca` aligns
them with λ = 0, `im_lca` with the configured λ (DESIGN §3).

It is the IM family's central state (engine/family.py): its checkpoint adds `theta0.<key>` and `merged.<key>` to
CentralState's `bank.<key>` and `heads.<method>.<task>` tensors. It imports core and nothing heavier.
"""
from __future__ import annotations

import torch

from imlca.config import ExperimentConfig
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.lca import align_heads
from imlca.core.merging import incremental_merge
from imlca.engine.central import ALIGN_TERMS, CentralState, Heads, part
from imlca.engine.seeding import generator
from imlca.engine.task_output import TaskOutput
from imlca.registries import ALIGN_LOSSES, MERGE_RULES, METHODS

Tensors = dict[str, torch.Tensor]


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


class MergeState(CentralState):
    def __init__(self, cfg: ExperimentConfig, theta0: Tensors, dim: int, bank: GaussianBank | None = None):
        """`bank`: shared by a grouped trial's variants (CentralState); such a state reads θ0 too, and owns only
        its heads, accuracies and losses."""
        super().__init__(cfg, dim, bank)
        self.theta0 = dict(theta0) if self.shared else {k: v.detach().cpu().clone() for k, v in theta0.items()}
        self.merged: Tensors = dict(self.theta0) if self.shared else {k: v.clone() for k, v in self.theta0.items()}

    def evaluation(self) -> tuple[Tensors, Heads]:
        return self.merged, self.heads

    def _integrate(self, out: TaskOutput, merged: Tensors | None = None) -> None:
        """Merge task `out.task`'s adapter, add its head, align every method's heads. `merged`: the merged adapter
        after this task, computed once for several states (a grouped trial's variants, which differ in `align.*`
        keys only) and taken as it is instead of merged again."""
        adapter = {k: v.detach().cpu() for k, v in out.adapter.items()}
        if merged is not None:
            self.merged = merged
        elif out.task == 0:
            self.merged = {k: v.clone() for k, v in adapter.items()}  # θ_merged(0) is task 0's adapter
        else:
            rule = MERGE_RULES.load(self.cfg.merge.rule)
            self.merged = incremental_merge(self.theta0, self.merged, adapter, rule, self.cfg.merge.alpha)
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

    def _own_tensors(self) -> Tensors:
        tensors = {f"theta0.{k}": v for k, v in self.theta0.items()}
        return {**tensors, **{f"merged.{k}": v for k, v in self.merged.items()}}

    def _load_own(self, tensors: Tensors, meta: dict) -> None:
        self.theta0, self.merged = part(tensors, "theta0."), part(tensors, "merged.")
