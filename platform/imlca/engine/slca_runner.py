"""SLCARunner: the slca family's worker — the IM TaskRunner's data, loaders and evaluation, with the whole
backbone trained (the slow learner) and affine heads.

A task loads the backbone the centre holds, trains it at `train.lr × slca.backbone_lr_scale` and its new head at
`train.lr` (SGD with momentum and weight decay on both, MultiStepLR at `slca.milestones`), cross-entropy on the
new head's logits only (old heads take no part, so they stay frozen), the model in eval mode (BatchNorm statistics
frozen, as for LoRA; a ViT has no dropout to switch). It returns the whole backbone, the new head [n_t, D + 1] and
the new classes' statistics from the trained backbone. Evaluation: one backbone pass, argmax over every head.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from imlca.config import SLCAConfig, TrainConfig
from imlca.core.slca import affine_logits
from imlca.engine.loops import run_epochs
from imlca.engine.runner import TaskRunner
from imlca.models.model import IncrementalModel, build_full_model

Tensors = dict[str, torch.Tensor]


class BackboneSpace:
    """The weights that travel for a whole-backbone family: the backbone's state_dict (buffers included)."""

    def __init__(self, model: IncrementalModel):
        self.theta0 = self.read(model)

    def initial(self) -> Tensors:
        return {k: v.clone() for k, v in self.theta0.items()}

    def load(self, model: IncrementalModel, state: Tensors) -> None:
        model.backbone.load_state_dict(state)

    def read(self, model: IncrementalModel) -> Tensors:
        return {k: v.detach().cpu().clone() for k, v in model.backbone.state_dict().items()}


def slow_learner(backbone: nn.Module, head: nn.Parameter, train: TrainConfig, slca: SLCAConfig):
    """SGD with the backbone at train.lr × backbone_lr_scale (left out at 0) and the head at train.lr, momentum and
    weight decay on both; MultiStepLR(milestones, lr_decay) → (optimizer, schedule)."""
    groups = [{"params": [head], "lr": train.lr}]
    if slca.backbone_lr_scale > 0:
        groups.insert(0, {"params": list(backbone.parameters()), "lr": train.lr * slca.backbone_lr_scale})
    optimizer = torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, slca.milestones, gamma=slca.lr_decay)


class SLCARunner(TaskRunner):
    def _build_model(self) -> IncrementalModel:
        model = build_full_model(self.cfg, self.cfg.slca.fresh_final_norm)
        for param in model.backbone.parameters():
            param.requires_grad_(self.cfg.slca.backbone_lr_scale > 0)  # 0: the original's fixed backbone
        return model

    def _make_space(self) -> BackboneSpace:
        return BackboneSpace(self.model)

    def _new_head(self, num_classes: int, task: int) -> torch.Tensor:
        weight = super()._new_head(num_classes, task)  # trunc-normal(0.02) [n_t, D], as theirs
        return torch.cat([weight, torch.zeros(num_classes, 1)], dim=1)  # bias 0 → [n_t, D + 1]

    def _fit(self, head: nn.Parameter, loader: DataLoader, offset: int, hear) -> list[float]:
        optimizer, schedule = slow_learner(self.model.backbone, head, self.cfg.train, self.cfg.slca)
        self.model.freeze_statistics()
        return run_epochs(self.model, head, loader, offset, self.cfg.train, self.device, optimizer, schedule, hear,
                          logits_of=affine_logits)

    def _predict(self, features: torch.Tensor, heads: list[torch.Tensor]) -> torch.Tensor:
        return affine_logits(features, torch.cat(list(heads)).to(features)).argmax(dim=1)
