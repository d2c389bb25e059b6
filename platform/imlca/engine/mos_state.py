"""MOSState: the mos family's central state — the adapter snapshots, the adapter carried to the next task, the
linear head over every class (aligned), the new classes' prototypes and the Gaussian bank (CentralState's).

Per task: the snapshot joins the list; the adapter the worker hands on replaces the carried one; the trained head
replaces the last; from task 1 on the head is aligned on features drawn from the bank (core/mos.py `align_head`,
models/mos.py `classifer_align` l.247–333) and the aligned head is what the next task trains from (nothing is
restored, as theirs). The evaluation heads (`heads.mos.<j>`, [n_j, 2D + 1]) are rebuilt from the aligned head
and the prototypes every task. The weights (evaluation and `train_input` alike): the snapshots, the carried
adapter, the mean of the snapshots, the first snapshot, the head and the old classes' means (for the
orthogonality loss).
Checkpoint: CentralState's tensors + `snapshots.<k>.<key>`, `current.<key>`, `head`, `prototypes.<j>`.
"""
from __future__ import annotations

import torch

from imlca.config import ExperimentConfig
from imlca.core.mos import align_head, sample_bank, snapshot_means
from imlca.engine.central import CentralState, Heads, part, prefixed
from imlca.engine.seeding import generator
from imlca.engine.task_output import TaskOutput

Tensors = dict[str, torch.Tensor]


class MOSState(CentralState):
    INITIAL = "initial."

    def __init__(self, cfg: ExperimentConfig, theta0: Tensors, dim: int):
        super().__init__(cfg, dim)
        self.initial = {k: v.detach().cpu().clone() for k, v in theta0.items()}
        self.current: Tensors = part(self.initial, "current.")
        self.head: torch.Tensor | None = self.initial.get("head")  # [C, D + 1]
        self.snapshots: list[Tensors] = []
        self.prototypes: list[torch.Tensor] = []  # per task [n_t, D]

    def evaluation(self) -> tuple[Tensors, Heads]:
        """Weights: the snapshots (`<k>.<key>`) and what the next task trains from (`train_input`: the Ray steps
        train the next task from these weights directly)."""
        weights = {f"{k}.{key}": v for k, snapshot in enumerate(self.snapshots) for key, v in snapshot.items()}
        weights.update({**prefixed(self.current, "current."), "head": self.head})
        if self.snapshots:
            weights.update(prefixed(snapshot_means(self.snapshots + [{}])[-1], "mean."))
            weights.update(prefixed(self.snapshots[0], "adapter0."))
            weights["old_means"] = self.bank.means(list(range(sum(len(p) for p in self.prototypes))))
        return weights, {method: self.heads[method] for method in self.methods}

    def _align(self, task: int) -> float:
        """Classifier alignment of the head on the bank → the last epoch's mean loss."""
        seen, m, train = sum(len(p) for p in self.prototypes), self.cfg.mos, self.cfg.train
        batch, gen = m.ca_samples_factor * train.batch_size, generator(self.cfg.seed, "align", task)

        def draw():
            features, labels = sample_bank(self.bank, list(range(seen)), batch, gen, m.statistics == "variance")
            order = torch.randperm(len(labels), generator=gen)
            return features[order], labels[order]

        self.head, history = align_head(self.head, draw, seen, batch, m.ca_epochs, m.ca_lr, train.momentum,
                                        train.weight_decay)
        return history[-1]

    def _rebuild_heads(self) -> None:
        sizes = [len(p) for p in self.prototypes]
        rows = self.head[:sum(sizes)].split(sizes)
        for method in self.methods:  # one method ("mos")
            self.heads[method] = [torch.cat([p, h], dim=1) for p, h in zip(self.prototypes, rows)]

    def _integrate(self, out: TaskOutput) -> None:
        self.snapshots.append(part(out.adapter, "snapshot."))
        self.current = part(out.adapter, "current.")
        self.prototypes.append(out.adapter["prototypes"].detach().cpu().clone())
        self.head = out.head.detach().cpu().clone()
        loss = self._align(out.task) if out.task > 0 and self.cfg.mos.ca_epochs > 0 else float("nan")
        self._rebuild_heads()
        for method in self.methods:
            terms = self.align_loss[method]
            terms["loss"].append(loss)
            terms["ce"].append(loss)  # the alignment loss is a cross-entropy
            terms["spread"].append(float("nan"))

    def _own_tensors(self) -> Tensors:
        tensors = {f"snapshots.{k}.{key}": v for k, s in enumerate(self.snapshots) for key, v in s.items()}
        tensors.update({f"prototypes.{j}": p for j, p in enumerate(self.prototypes)})
        return {**tensors, **prefixed(self.current, "current."), "head": self.head,
                **prefixed(self.initial, self.INITIAL)}

    def _load_own(self, tensors: Tensors, meta: dict) -> None:
        self.snapshots = [part(tensors, f"snapshots.{k}.") for k in range(self.tasks_merged)]
        self.prototypes = [tensors[f"prototypes.{j}"] for j in range(self.tasks_merged)]
        self.current, self.head = part(tensors, "current."), tensors["head"]
        self.initial = part(tensors, self.INITIAL)
        if self.tasks_merged:
            self._rebuild_heads()
