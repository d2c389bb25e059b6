"""MOS's own settings (`mos:`), beside the ones it shares with the other families: `train.lr` (the adapter's; the
head trains at `head_lr_scale` times it), `train.epochs`, `train.batch_size`, `train.momentum` (SGD),
`train.weight_decay` (training and classifier alignment), `train.min_lr` (the cosine schedule's end; the authors'
0) and `align.ridge` (Σ_c + ridge·I, the authors' 1e-4). Defaults follow the authors' code and configs
(sun-hailong/AAAI25-MOS models/mos.py, backbone/vit_mos.py, exps/*.json; docs/concepts/method-families.md)."""
from __future__ import annotations

from dataclasses import dataclass

from imlca.config.loading import choose, described, require
from imlca.registries import BACKBONES

AUTHORS_BOTTLENECK = 16  # exps/*.json "ffn_num"
REWEIGHTS = ("every_forward", "once_per_step")
STATISTICS = ("covariance", "variance")


@dataclass
class MOSConfig:
    bottleneck: int | None = described(None, "the adapter's width r (the authors' `ffn_num`); null: the authors' "
                                       "16, or the backbone's narrowest block where that is narrower")
    adapter_scale: float = described(0.1, "s of out = MLP(LN(x)) + s·up(ReLU(down(x))) (`ffn_adapter_scalar`)")
    adapter_dropout: float = described(0.1, "dropout on the adapter's bottleneck while training")
    adapter_momentum: float = described(0.1, "m of the pull adapter ← (1 − m)·adapter + m·mean(earlier "
                                        "snapshots); 0: no pull")
    reweight: str = described("every_forward", "every_forward: the authors' code, which pulls the adapter in place "
                              "once per block on every forward (training, statistics, and the stored adapters at "
                              "test time) besides once per step; once_per_step: only after each optimiser step, "
                              "as the paper describes (stored adapters stay frozen)")
    reg: float = described(0.1, "weight of the orthogonality loss (`reg`)")
    temperature: float = described(0.8, "temperature of the orthogonality loss's similarities")
    head_lr_scale: float = described(0.1, "the linear head's learning rate as a multiple of train.lr")
    statistics: str = described("covariance", "covariance: full Σ_c per class; variance: its diagonal (the "
                                "authors' ImageNet-A config)")
    ca_epochs: int = described(30, "classifier-alignment epochs on the head from task 1 on (`crct_epochs`); 0: none")
    ca_lr: float = described(0.005, "classifier-alignment learning rate (`ca_lr`)")
    ca_samples_factor: int = described(5, "features drawn per class and epoch, as a multiple of train.batch_size")
    retrieval_rounds: int = described(4, "at most this many rounds of self-refined retrieval per image (>= 1)")
    ensemble: bool = described(True, "add softmax((t + 1)·prototype logits) to softmax(head logits) (`ensemble`)")

    def __post_init__(self) -> None:
        require(self.bottleneck is None or self.bottleneck >= 1, "bottleneck", f"must be >= 1 (got {self.bottleneck})")
        require(self.adapter_scale > 0, "adapter_scale", f"must be > 0 (got {self.adapter_scale})")
        require(0 <= self.adapter_dropout < 1, "adapter_dropout", f"must be in [0, 1) (got {self.adapter_dropout})")
        require(0 <= self.adapter_momentum <= 1, "adapter_momentum",
                f"must be in [0, 1] (got {self.adapter_momentum})")
        choose(self.reweight, "reweight", REWEIGHTS)
        require(self.reg >= 0, "reg", f"must be >= 0 (got {self.reg})")
        require(self.temperature > 0, "temperature", f"must be > 0 (got {self.temperature})")
        require(self.head_lr_scale >= 0, "head_lr_scale", f"must be >= 0 (got {self.head_lr_scale})")
        choose(self.statistics, "statistics", STATISTICS)
        require(self.ca_epochs >= 0, "ca_epochs", f"must be >= 0 (got {self.ca_epochs})")
        require(self.ca_lr > 0, "ca_lr", f"must be > 0 (got {self.ca_lr})")
        require(self.ca_samples_factor >= 1, "ca_samples_factor", f"must be >= 1 (got {self.ca_samples_factor})")
        require(self.retrieval_rounds >= 1, "retrieval_rounds",
                f"must be >= 1 (got {self.retrieval_rounds}): round 1 is the prototype classifier's adapter")


def mos_bottleneck(backbone: str, configured: int | None) -> int:
    """The adapter width MOS builds: the configured one, or the authors' 16 capped at the narrowest block."""
    return configured if configured is not None else min(AUTHORS_BOTTLENECK, BACKBONES[backbone].adapter_width)
