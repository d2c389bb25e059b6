"""Typed experiment configuration.

Defaults are the paper's setup (ViT-B/16, LoRA r=64 on qkv, DESIGN §1); a YAML file holds only what differs.
Every section validates itself in `__post_init__`; `load_config` reads YAML strictly (an unknown key is an error
naming it) and applies `--set a.b=c` overrides. `flatten` gives the dotted view logged as MLflow params.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from imlca.config.ease import EASEConfig, check_adapter
from imlca.config.slca import SLCAConfig
from imlca.config.loading import (choose, config_path, flatten, from_dict, parse_override, read_config_tree,
                                  require, set_dotted, to_dict)
from imlca.errors import ConfigError
from imlca.registries import BACKBONES, BENCHMARKS, MERGE_RULES, MERGE_SPACES, METHODS, family_of

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
PIPELINES = ("pil", "cached")  # per-image torchvision transforms | decoded-image cache + batched augmentation
INTERPOLATIONS = ("bilinear", "bicubic")  # the statistics/evaluation resize
# lora.init → peft's init_lora_weights; B = 0 in both, so θ0 leaves the backbone unchanged
LORA_INITS = {"gaussian": "gaussian",  # A ~ N(0, 1/r): the reference (helper.py)
              "kaiming": True}  # A kaiming-uniform (a=√5, nn.Linear's default): peft's default


@dataclass
class DataConfig:
    benchmark: str = "cifar100"
    root: str | None = None  # dataset root; falls back to $IMLCA_DATA
    image_size: int = 224
    normalize: bool = False  # the reference feeds raw [0, 1] pixels to the ViT
    crop_scale_min: float = 0.05  # training RandomResizedCrop(scale=(min, 1))
    # statistics/evaluation: Resize(int(ratio · image_size), interpolation) + CenterCrop(image_size); ratio null:
    # the authors' per benchmark, 1 for CIFAR-100 (32-px images are upscaled) and 256/224 otherwise
    eval_interpolation: str = "bilinear"
    eval_resize_ratio: float | None = 1.0
    hflip: bool = True
    train_per_class: int | None = None  # keep at most this many training images per class (None: all)
    test_per_class: int | None = None
    val_fraction: float = 0.0  # per class, seeded, carved from train (after train_per_class); 0: no validation
    task_sizes: list[int] | None = None  # classes per task; None: the benchmark's own split
    num_workers: int | None = 0  # loader processes; None: the trial's CPUs (resources.num_cpus) less one
    pipeline: str = "pil"  # "cached": images decoded once per node, augmented as batches on the device
    cache_dir: str | None = None  # the decoded-image cache; falls back to $IMLCA_CACHE, then ~/.cache/imlca

    def __post_init__(self) -> None:
        choose(self.benchmark, "benchmark", BENCHMARKS)
        require(self.image_size >= 8, "image_size", f"must be >= 8 (got {self.image_size})")
        require(0 < self.crop_scale_min <= 1, "crop_scale_min", f"must be in (0, 1] (got {self.crop_scale_min})")
        choose(self.eval_interpolation, "eval_interpolation", INTERPOLATIONS)
        require(self.eval_resize_ratio is None or self.eval_resize_ratio >= 1, "eval_resize_ratio",
                f"must be >= 1 (the centre crop needs the resized image at least image_size) or null "
                f"(got {self.eval_resize_ratio})")
        for key in ("train_per_class", "test_per_class"):
            value = getattr(self, key)
            require(value is None or value >= 1, key, f"must be >= 1 or null (got {value})")
        require(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1) (got {self.val_fraction})")
        if self.task_sizes is not None:
            require(len(self.task_sizes) > 0 and min(self.task_sizes) >= 1, "task_sizes",
                     f"must be a non-empty list of positive class counts (got {self.task_sizes})")
        require(self.num_workers is None or self.num_workers >= 0, "num_workers",
                f"must be >= 0 or null (got {self.num_workers})")
        choose(self.pipeline, "pipeline", PIPELINES)


@dataclass
class ModelConfig:
    backbone: str = "vit_base_patch16_224"
    pretrained: bool = True  # timm hub weights (downloads); ignored when `checkpoint` is set
    checkpoint: str | None = None  # local weights: .safetensors, or .pth/.bin read with weights_only=True
    layer_norm: bool = False  # trainable LayerNorm after the backbone (paper-era code); merged like LoRA
    # which of timm's weights for the name (timm `name.tag`, e.g. augreg_in21k_ft_in1k); None: timm's default
    pretrained_tag: str | None = None

    def __post_init__(self) -> None:
        choose(self.backbone, "backbone", BACKBONES)
        tag = self.pretrained_tag
        if tag is not None:
            require(bool(tag) and "." not in tag and not any(c.isspace() for c in tag), "pretrained_tag",
                    f"must be a timm weights tag such as augreg_in21k_ft_in1k, or null (got {tag!r})")
            require(BACKBONES[self.backbone].hub_weights, "pretrained_tag",
                    f"backbone {self.backbone} takes no timm hub weights, so no tag; set it to null")
        require(not (self.pretrained and self.checkpoint is None and BACKBONES[self.backbone].random_only),
                "pretrained", f"backbone {self.backbone} has no pretrained weights; set it to false "
                "(or give model.checkpoint)")


@dataclass
class LoRAConfig:
    rank: int = 64
    alpha: float = 128.0
    dropout: float = 0.0  # on each LoRA input while a task trains (the backbone itself stays in eval mode)
    target: str | None = None  # regex over module names; None: the backbone's default (ViT: blocks.N.attn.qkv)
    init: str = "gaussian"  # a name of LORA_INITS

    def __post_init__(self) -> None:
        require(self.rank >= 1, "rank", f"must be >= 1 (got {self.rank})")
        require(self.alpha > 0, "alpha", f"must be > 0 (got {self.alpha})")
        require(0 <= self.dropout < 1, "dropout", f"must be in [0, 1) (got {self.dropout})")
        choose(self.init, "init", LORA_INITS)
        if self.target is not None:
            import re

            try:
                re.compile(self.target)
            except re.error as err:
                raise ConfigError("target", f"not a valid regex ({err})") from None


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_lr: float = 1e-6  # cosine schedule end
    device: str = "auto"  # auto: cuda when present
    precision: str = "fp32"  # bf16: autocast of the training forward/backward (statistics, evaluation: fp32)
    channels_last: bool = False  # NHWC model and batches (faster convolutions on GPUs; CNN backbones)
    compile: bool = False  # torch.compile the backbone (in place: its state_dict keys stay the same)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", f"must be >= 1 (got {self.epochs})")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")
        require(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        require(0 <= self.momentum < 1, "momentum", f"must be in [0, 1) (got {self.momentum})")
        require(self.weight_decay >= 0, "weight_decay", f"must be >= 0 (got {self.weight_decay})")
        require(0 <= self.min_lr <= self.lr, "min_lr", f"must be in [0, lr] (got {self.min_lr})")
        choose(self.device, "device", DEVICES)
        choose(self.precision, "precision", PRECISIONS)


@dataclass
class MergeConfig:
    rule: str = "ties"  # the public code's default; the paper's rule is max_abs
    space: str = "factors"  # merge LoRA A and B element-wise (reference) or the dense ΔW = s·B·A
    alpha: float = 1.0  # θ_merged = θ0 + α·τ

    def __post_init__(self) -> None:
        choose(self.rule, "rule", MERGE_RULES)
        choose(self.space, "space", MERGE_SPACES)
        require(self.alpha > 0, "alpha", f"must be > 0 (got {self.alpha})")


@dataclass
class AlignConfig:
    method: str = "im_lca"  # the run's own method; its metrics are the run's headline
    compare: list[str] = field(default_factory=list)  # other methods scored on the same backbone trajectory
    lam: float = 0.1  # λ of the LCA loss
    samples_per_class: int = 512
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-3
    ca_lr: float | None = None  # IM+CA's lr (the authors: 1e-2); None: align.lr, which keeps older configs' numbers
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ridge: float = 1e-4  # Σ_c + ridge·I
    # the authors' optional LCA terms (DESIGN §1b; IM+LCA only, their CA baseline has neither); defaults: off
    entropy_weight: float = 0.0  # w·(mean entropy of softmax(logits) inside each class's local region)
    logit_norm_temperature: float | None = None  # τ: ℓ on logits / (mean L2 norm of each seen task's logits) / τ

    def __post_init__(self) -> None:
        choose(self.method, "method", METHODS)
        for name in self.compare:
            choose(name, "compare", METHODS)
        require(self.lam >= 0, "lam", f"must be >= 0 (got {self.lam})")
        require(self.samples_per_class >= 1, "samples_per_class", f"must be >= 1 (got {self.samples_per_class})")
        require(self.epochs >= 1, "epochs", f"must be >= 1 (got {self.epochs})")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")
        require(self.lr > 0, "lr", f"must be > 0 (got {self.lr})")
        require(self.ca_lr is None or self.ca_lr > 0, "ca_lr", f"must be > 0 or null (got {self.ca_lr})")
        require(self.ridge >= 0, "ridge", f"must be >= 0 (got {self.ridge})")
        require(self.entropy_weight >= 0, "entropy_weight", f"must be >= 0 (got {self.entropy_weight})")
        require(self.logit_norm_temperature is None or self.logit_norm_temperature > 0, "logit_norm_temperature",
                f"must be > 0 or null (null: no logit normalisation; got {self.logit_norm_temperature})")

    @property
    def family(self) -> str:
        """The run's method family (registries.FAMILIES): what its tasks train and what the centre keeps."""
        return family_of(self.method)

    @property
    def methods(self) -> list[str]:
        """The run's method first, then the comparisons of its family (they share its trajectory; another
        family's need a run of their own), without repeats."""
        same = [m for m in self.compare if family_of(m) == self.family]
        return list(dict.fromkeys([self.method, *same]))


@dataclass
class EvalConfig:
    batch_size: int = 256

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")


@dataclass
class RobustnessConfig:
    """Robustness after the last task (DESIGN §2): CIFAR-100-C/-P folders, or corruptions made on the fly."""
    corruptions_dir: str | None = None  # <corruption>.npy + labels.npy (CIFAR-100-C)
    perturbations_dir: str | None = None  # <perturbation>.npy sequences (CIFAR-100-P)
    generate: bool = False  # corrupt the benchmark's own test images with imagecorruptions (19 × severities)
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    limit: int | None = None  # images per severity block / sequences / generated images (None: all)

    def __post_init__(self) -> None:
        require(bool(self.severities) and set(self.severities) <= {1, 2, 3, 4, 5}, "severities",
                 f"must be a non-empty subset of [1, 2, 3, 4, 5] (got {self.severities})")
        require(self.limit is None or self.limit >= 1, "limit", f"must be >= 1 or null (got {self.limit})")

    @property
    def enabled(self) -> bool:
        return bool(self.corruptions_dir or self.perturbations_dir or self.generate)


@dataclass
class ResourcesConfig:
    num_cpus: float = 1.0  # per TaskWorker; torch threads follow it
    num_gpus: float = 0.0  # per TaskWorker; fractional shares a GPU between workers
    memory_gb: float = 0.0  # host RAM per TaskWorker that Ray reserves (GiB; 0: none), so trials fit their node

    def __post_init__(self) -> None:
        require(self.num_cpus > 0, "num_cpus", f"must be > 0 (got {self.num_cpus})")
        require(self.num_gpus >= 0, "num_gpus", f"must be >= 0 (got {self.num_gpus})")
        require(self.memory_gb >= 0, "memory_gb", f"must be >= 0 (got {self.memory_gb})")

    def ray_resources(self) -> dict[str, float]:
        """What one TaskWorker holds, in Ray's resource names (memory in bytes)."""
        wanted = {"CPU": self.num_cpus, "GPU": self.num_gpus, "memory": int(self.memory_gb * 2**30)}
        return {name: amount for name, amount in wanted.items() if amount}


@dataclass
class TrackingConfig:
    uri: str | None = None  # $MLFLOW_TRACKING_URI wins; else this; else sqlite:///mlflow.db
    experiment: str = "imlca"


@dataclass
class ExperimentConfig:
    name: str = "imlca"
    seed: int = 1993  # class order and all randomness derive from it
    output_dir: str = "outputs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    slca: SLCAConfig = field(default_factory=SLCAConfig)  # read by the slca family only
    ease: EASEConfig = field(default_factory=EASEConfig)  # read by the ease family only

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "name", "must not be empty")
        family = self.align.family
        for section in FAMILY_SECTIONS:
            settings, defaults = getattr(self, section), type(getattr(self, section))()
            if family != section and settings != defaults:
                changed = next(k for k in vars(settings) if getattr(settings, k) != getattr(defaults, k))
                raise ConfigError(f"{section}.{changed}", f"is a setting of the {section} family, but align.method "
                                  f"is {self.align.method} (family {family}); remove it or set align.method={section}")
        require(not (family == "slca" and self.slca.fresh_final_norm and not BACKBONES[self.model.backbone].sized),
                "slca.fresh_final_norm", f"needs a ViT (a final LayerNorm); {self.model.backbone} has none: set "
                "it to false")
        if family in ADAPTER_FAMILIES:
            check_adapter(self.model.backbone, getattr(self, family).bottleneck, family)


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    tree = read_config_tree(config_path(path)) if path is not None else {}  # a bare name may be a bundled file
    for text in overrides:
        set_dotted(tree, *parse_override(text))
    return from_dict(ExperimentConfig, tree)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


FAMILY_SECTIONS = ("slca", "ease")  # config sections read by one method family only (named as the family)
ADAPTER_FAMILIES = ("ease",)  # families that train models/adapters.py's adapters (a `bottleneck` in their section)
# keys that change where or how a run executes, not what it computes
NOT_IN_FINGERPRINT = ("name", "output_dir", "tracking.", "resources.", "data.root", "data.num_workers",
                      "data.cache_dir", "train.device", "train.channels_last", "train.compile")


def fingerprint(cfg: ExperimentConfig) -> str:
    """Short hash of everything that shapes a run's numbers (checkpoints of other configs are refused)."""
    import hashlib
    import json

    # another family's section is at its defaults (ExperimentConfig refuses it otherwise): left out, so a run's
    # fingerprint does not change when a family is added
    others = tuple(f"{family}." for family in FAMILY_SECTIONS if family != cfg.align.family)
    shaping = {k: v for k, v in flatten(cfg).items() if not k.startswith(NOT_IN_FINGERPRINT + others)}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
