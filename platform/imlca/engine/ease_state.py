"""EASEState: the ease family's central state — every task's adapter set, the raw prototypes each task brought
(CentralState's `heads.ease.<t>`: [n_t, (t + 1 + p)·D]) and the completed prototype matrix they are evaluated with.

Per task: the adapter set joins the list (frozen from now on); the raw prototypes join the heads; the complement
for old classes in newer subspaces is recomputed from all raw prototypes (core/ease.py `complete`), as the
authors recompute it every task. A task trains with nothing from the centre but the earlier sets (for its
prototypes in their subspaces): `train_input` = the evaluation weights, `<j>.<key>` for set j.
Checkpoint: CentralState's tensors + `adapters.<j>.<key>`; the completed matrix is recomputed on load.
"""
from __future__ import annotations

import torch

from imlca.config import ExperimentConfig
from imlca.core.ease import complete
from imlca.engine.central import CentralState, Heads, part
from imlca.engine.task_output import TaskOutput

Tensors = dict[str, torch.Tensor]


class EASEState(CentralState):
    def __init__(self, cfg: ExperimentConfig, theta0: Tensors, dim: int):
        super().__init__(cfg, dim)
        self.adapters: list[Tensors] = []
        self.completed: list[torch.Tensor] = []  # per task [n_i, S·D], S = tasks so far (+1 pre-trained)

    def evaluation(self) -> tuple[Tensors, Heads]:
        weights = {f"{j}.{k}": v for j, adapter in enumerate(self.adapters) for k, v in adapter.items()}
        return weights, {method: self.completed for method in self.methods}

    def _complete(self) -> None:
        raw = self.heads[self.methods[0]]
        sizes = [len(h) for h in raw]
        self.completed = list(complete(raw, self.dim, self.cfg.ease.pretrained_subspace).split(sizes))

    def _integrate(self, out: TaskOutput) -> None:
        self.adapters.append({k: v.detach().cpu() for k, v in out.adapter.items()})
        for method in self.methods:  # one method ("ease")
            self.heads[method].append(out.head.detach().cpu().clone())
            for terms in self.align_loss[method].values():
                terms.append(float("nan"))  # no alignment
        self._complete()

    def _own_tensors(self) -> Tensors:
        return {f"adapters.{j}.{k}": v for j, adapter in enumerate(self.adapters) for k, v in adapter.items()}

    def _load_own(self, tensors: Tensors, meta: dict) -> None:
        self.adapters = [part(tensors, f"adapters.{j}.") for j in range(self.tasks_merged)]
        if self.tasks_merged:
            self._complete()
