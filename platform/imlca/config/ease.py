"""EASE's own settings (`ease:`), beside the ones it shares with the other families: `train.lr`, `train.epochs`,
`train.batch_size`, `train.momentum` (SGD), `train.weight_decay`, `train.min_lr` (the cosine schedule's end; the
authors' 0). Defaults follow the authors' configs (CVPR24-Ease exps/*.json; docs/concepts/method-families.md)."""
from __future__ import annotations

from dataclasses import dataclass

from imlca.config.loading import choose, described, require
from imlca.registries import BACKBONES

EASE_OPTIMIZERS = ("sgd", "adam")  # adam: their ObjectNet IN1K config
AUTHORS_BOTTLENECK = 64


@dataclass
class EASEConfig:
    bottleneck: int | None = described(None, "the adapter's width r (the authors' `ffn_num`; VTAB 16); null: the "
                                       "authors' 64, or the backbone's narrowest block where that is narrower")
    adapter_scale: float = described(0.1, "s of out = MLP(LN(x)) + s·up(ReLU(down(x))) (`ffn_adapter_scalar`)")
    adapter_dropout: float = described(0.1, "dropout on the adapter's bottleneck while training")
    alpha: float = described(0.1, "weight of the other subspaces' cosine logits, divided by the task index (the "
                             "authors' CUB: 0.005)")
    pretrained_subspace: bool = described(False, "`use_init_ptm`: the plain pre-trained model as one more subspace")
    beta: float = described(0.0, "weight of the pre-trained subspace's cosine logits (the authors' CUB and "
                            "OmniBenchmark: 1, with pretrained_subspace)")
    optimizer: str = described("sgd", "sgd (momentum train.momentum) or adam (the authors' ObjectNet config)")
    cache_features: bool = described(True, "keep each frozen adapter's test features on the worker (the same "
                                     "numbers, fewer backbone passes)")

    def __post_init__(self) -> None:
        require(self.bottleneck is None or self.bottleneck >= 1, "bottleneck", f"must be >= 1 (got {self.bottleneck})")
        require(self.adapter_scale > 0, "adapter_scale", f"must be > 0 (got {self.adapter_scale})")
        require(0 <= self.adapter_dropout < 1, "adapter_dropout", f"must be in [0, 1) (got {self.adapter_dropout})")
        require(self.alpha >= 0, "alpha", f"must be >= 0 (got {self.alpha})")
        require(self.beta >= 0, "beta", f"must be >= 0 (got {self.beta})")
        require(self.pretrained_subspace or self.beta == 0, "beta",
                "weighs the pre-trained subspace: set ease.pretrained_subspace=true or leave beta at 0")
        choose(self.optimizer, "optimizer", EASE_OPTIMIZERS)


def check_adapter(backbone: str, bottleneck: int | None, family: str) -> None:
    """An adapter family needs a backbone with an adapter definition and a bottleneck no wider than its blocks."""
    spec = BACKBONES[backbone]
    require(spec.adapter is not None, "model.backbone",
            f"{backbone} has no adapter definition, which the {family} family trains; use one of "
            f"{', '.join(n for n, b in BACKBONES.items() if b.adapter)}")
    require(bottleneck is None or bottleneck <= spec.adapter_width, f"{family}.bottleneck",
            f"{bottleneck} is wider than {backbone}'s narrowest block ({spec.adapter_width}); use at most "
            f"{spec.adapter_width}")


def adapter_bottleneck(backbone: str, configured: int | None) -> int:
    """The adapter width a family builds: the configured one, or the authors' capped at the narrowest block."""
    return configured if configured is not None else min(AUTHORS_BOTTLENECK, BACKBONES[backbone].adapter_width)
