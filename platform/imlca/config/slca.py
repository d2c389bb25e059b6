"""SLCA's own settings (`slca:`), beside the ones it shares with IM: `train.lr` (the heads' lr; the backbone's is
`train.lr × slca.backbone_lr_scale`), `train.epochs`, `train.batch_size`, `train.momentum`, `train.weight_decay`,
`align.ridge` (Σ_c + ridge·I). Defaults follow SLCA's own repository (models/slca.py, exps/slca/*.json); where
LAMDA-PILOT's port differs, the other value is named and is a setting (docs/concepts/method-families.md)."""
from __future__ import annotations

from dataclasses import dataclass

from imlca.config.loading import described, require


@dataclass
class SLCAConfig:
    backbone_lr_scale: float = described(0.01, "the slow learner: the backbone's lr is train.lr × this (0: the "
                                         "backbone stays frozen)")
    milestones: list[int] = described(factory=lambda: [18], doc="MultiStepLR epochs (the authors' CIFAR-100: [18]; "
                                      "their 50-epoch configs: [40])")
    lr_decay: float = described(0.1, "MultiStepLR's γ")
    ca_epochs: int = described(5, "classifier-alignment epochs from the second task on (the authors' 5; PILOT's "
                               "port 3)")
    ca_lr: float = described(0.01, "the alignment's SGD lr (cosine to 0 over ca_epochs)")
    ca_samples_per_class: int = described(256, "features drawn per seen class per alignment epoch")
    logit_norm_temperature: float | None = described(0.1, "τ of the alignment loss' logit normalisation (the "
                                                     "authors' Cars: 0.05); null: plain cross-entropy")
    true_task_ids: bool = described(False, "the mean shrink's task id of a class: false as the authors (class // "
                                    "size of the current task, which shifts on uneven splits such as Cars'), true "
                                    "the class's real task")
    fresh_final_norm: bool = described(False, "replace the ViT's final LayerNorm with a fresh one, as the authors' "
                                       "in21k setup does; false (PILOT's) keeps the pretrained norm")

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
