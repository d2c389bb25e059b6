"""SLCAState: the slca family's central state — the whole backbone after the latest task, the Gaussian bank, the
heads as trained (pre-alignment) and the aligned copy a task is evaluated with.

Per task: the worker's backbone replaces the last one; the new classes' statistics join the bank (old classes'
are never recomputed); the new head joins the trained heads; from the second task on, a copy of all trained heads
is aligned (core/slca.py) and evaluated. The trained heads are never overwritten by the alignment: each task's
alignment restarts from them, as SLCA restores its heads after every evaluation (`fc.recall()`).
Checkpoint: CentralState's tensors (`heads.slca.<t>`: the trained heads) + `backbone.<key>` + `aligned.<t>`.
"""
from __future__ import annotations

import torch

from imlca.config import ExperimentConfig
from imlca.core.slca import align_slca_heads, authors_task_ids, mean_shrink
from imlca.engine.central import CentralState, Heads, part
from imlca.engine.seeding import generator
from imlca.engine.task_output import TaskOutput

Tensors = dict[str, torch.Tensor]


class SLCAState(CentralState):
    INITIAL = "backbone."
    def __init__(self, cfg: ExperimentConfig, theta0: Tensors, dim: int):
        super().__init__(cfg, dim)
        self.backbone: Tensors = {k: v.detach().cpu().clone() for k, v in theta0.items()}
        self.aligned: list[torch.Tensor] = []  # the evaluation copy of the latest task's heads

    def evaluation(self) -> tuple[Tensors, Heads]:
        return self.backbone, {method: self.aligned for method in self.methods}

    def _integrate(self, out: TaskOutput) -> None:
        self.backbone = {k: v.detach().cpu() for k, v in out.adapter.items()}
        loss = float("nan")
        for method in self.methods:  # one method ("slca"); its heads as trained
            self.heads[method].append(out.head.detach().cpu().clone())
        trained = self.heads[self.methods[0]]
        self.aligned = [h.clone() for h in trained]
        s = self.cfg.slca
        if out.task > 0 and s.ca_epochs > 0:
            sizes = [len(h) for h in trained]
            tasks = ([t for t, n in enumerate(sizes) for _ in range(n)] if s.true_task_ids
                     else authors_task_ids(sum(sizes), sizes[-1]))
            weight, history = align_slca_heads(
                torch.cat(trained), self.bank, sizes, mean_shrink(tasks, out.task), s.ca_samples_per_class,
                s.ca_epochs, s.ca_lr, self.cfg.train.momentum, self.cfg.train.weight_decay,
                s.logit_norm_temperature, generator(self.cfg.seed, "align", out.task))
            self.aligned, loss = list(weight.split(sizes)), history[-1]
        for method in self.methods:
            terms = self.align_loss[method]
            terms["loss"].append(loss)
            terms["ce"].append(loss)  # the CA loss is a cross-entropy
            terms["spread"].append(float("nan"))  # no local-robustness term

    def _own_tensors(self) -> Tensors:
        tensors = {f"backbone.{k}": v for k, v in self.backbone.items()}
        return {**tensors, **{f"aligned.{t}": h for t, h in enumerate(self.aligned)}}

    def _load_own(self, tensors: Tensors, meta: dict) -> None:
        self.backbone = part(tensors, "backbone.")
        aligned = part(tensors, "aligned.")
        self.aligned = [aligned[str(t)] for t in range(len(aligned))]
