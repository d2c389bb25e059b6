"""SLCA's own settings (`slca:`), beside the ones it shares with IM: `train.lr` (the heads' lr; the backbone's is
`train.lr × slca.backbone_lr_scale`), `train.epochs`, `train.batch_size`, `train.momentum`, `train.weight_decay`,
`align.ridge` (Σ_c + ridge·I). Defaults follow SLCA's own repository (models/slca.py, exps/slca/*.json); where
LAMDA-PILOT's port differs, the other value is named and is a setting (docs/concepts/method-families.md)."""
from __future__ import annotations

from dataclasses import dataclass, field

from imlca.config.loading import require


@dataclass
class SLCAConfig:
    backbone_lr_scale: float = 0.01  # the slow learner: backbone lr = train.lr × this (0: backbone frozen)
    milestones: list[int] = field(default_factory=lambda: [18])  # MultiStepLR epochs (CIFAR: [18], 50-epoch: [40])
    lr_decay: float = 0.1  # MultiStepLR γ
    ca_epochs: int = 5  # classifier alignment from the second task on (the original 5; PILOT's port 3)
    ca_lr: float = 0.01  # the alignment's SGD lr (cosine to 0 over ca_epochs)
    ca_samples_per_class: int = 256  # features drawn per seen class per epoch; one pass of C batches of this size
    logit_norm_temperature: float | None = 0.1  # τ of the CA loss' logit normalisation (Cars: 0.05); null: off
    true_task_ids: bool = False  # the mean shrink's task id of a class: false as the authors (class // size of
    # the current task, which shifts on uneven splits such as Cars'), true the class's real task
    fresh_final_norm: bool = False  # the original replaces the ViT's final LayerNorm with a fresh one (in21k
    # weights); PILOT (and the default) keeps the pretrained norm of augreg_in21k_ft_in1k

    def __post_init__(self) -> None:
        require(self.backbone_lr_scale >= 0, "backbone_lr_scale",
                f"must be >= 0 (0 freezes the backbone; got {self.backbone_lr_scale})")
        require(all(isinstance(m, int) and m >= 1 for m in self.milestones)
                and self.milestones == sorted(set(self.milestones)), "milestones",
                f"must be increasing epoch numbers >= 1 (got {self.milestones})")
        require(0 < self.lr_decay <= 1, "lr_decay", f"must be in (0, 1] (got {self.lr_decay})")
        require(self.ca_epochs >= 0, "ca_epochs", f"must be >= 0 (0: no alignment; got {self.ca_epochs})")
        require(self.ca_lr > 0, "ca_lr", f"must be > 0 (got {self.ca_lr})")
        require(self.ca_samples_per_class >= 1, "ca_samples_per_class",
                f"must be >= 1 (got {self.ca_samples_per_class})")
        require(self.logit_norm_temperature is None or self.logit_norm_temperature > 0, "logit_norm_temperature",
                f"must be > 0 or null (null: plain cross-entropy; got {self.logit_norm_temperature})")
