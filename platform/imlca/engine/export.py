"""A trained run as a model people can reuse elsewhere: peft's own adapter format on the timm backbone, the
classifier and the class names. `ExportedModel` turns such a folder back into a predictor (`imlca.load` also
fetches one from an MLflow run).

Folder layout (`model/` of a run's outputs):
  model.json                    timm name, how to rebuild the backbone, image size, normalisation, merge space
  adapter/adapter_config.json   peft LoraConfig         } `merge.space: factors`: the merged LoRA factors,
  adapter/adapter_model.safetensors                     } loadable with PeftModel.from_pretrained(backbone, ...)
  backbone.safetensors          `merge.space: delta`: the timm state dict with the merged ΔW folded into W0;
                                the slca family: its whole fine-tuned backbone
  layer_norm.safetensors        the merged LayerNorm after the pooled features (when the run trains one)
  head.safetensors              `weight` [C, D]: the method's heads, rows in class-order positions (+ `bias` [C]
                                for the slca family's affine heads)
  classes.json                  the class name of every row of `weight`
The backbone's base weights are not copied: they are rebuilt as the run built them (timm + the configured
weights, or the seeded random init), so a folder stays as small as the adapter.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from imlca.config import ExperimentConfig, from_dict
from imlca.errors import UserError

Tensors = dict[str, torch.Tensor]
PEFT_PREFIX = "base_model.model."  # PeftModel's names for the wrapped model's modules
LN_PREFIX, DELTA_PREFIX = "ln.", "delta."


def lora_config(cfg: ExperimentConfig):
    from peft import LoraConfig

    from imlca.registries import BACKBONES

    return LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, bias="none",
                      target_modules=cfg.lora.target or BACKBONES[cfg.model.backbone].lora_target,
                      init_lora_weights=cfg.lora.init)


def fresh_backbone(cfg: ExperimentConfig) -> torch.nn.Module:
    """The timm backbone exactly as the run started from it (same weights source, same seeded init)."""
    from imlca.models.backbone import create_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return create_backbone(cfg.model.backbone, cfg.model.pretrained, cfg.model.checkpoint, cfg.data.image_size,
                               cfg.model.pretrained_tag)


def folded_backbone(cfg: ExperimentConfig, merged: Tensors) -> Tensors:
    """`merge.space: delta`: the backbone's state dict with W0 + merged ΔW in every adapted layer."""
    state = fresh_backbone(cfg).state_dict()
    for key, delta in merged.items():
        if key.startswith(DELTA_PREFIX):
            name = key[len(DELTA_PREFIX):] + ".weight"
            state[name] = state[name] + delta.to(state[name].dtype)
    return state


FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CLASS_NAMES = {"digits_fashion20": [f"digit {d}" for d in range(10)] + FASHION}  # dataset class id → name


def class_names(cfg: ExperimentConfig, num_classes: int) -> list[str]:
    """The name of each class-order position (the seeded order the run trained in): the benchmark's own names, an
    ImageFolder tree's folder names, else `class <id>`."""
    from imlca.data.paper import folder_class_names
    from imlca.data.splits import class_order

    names = CLASS_NAMES.get(cfg.data.benchmark) or folder_class_names(cfg.data)
    if names is not None and len(names) != num_classes:  # the tree changed since the run: ids no longer match
        names = None
    return [names[c] if names else f"class {c}" for c in class_order(num_classes, cfg.seed).tolist()]


NOT_EXPORTED = ("ease", "mos")  # families whose prediction takes several backbone passes: no single-model folder


def export_run_folder(run_dir: Path, cfg: ExperimentConfig) -> Path | None:
    """`run_dir/model/` from a finished run's `adapter.safetensors` and `heads.safetensors` (the heads of
    `align.method`); None for a family in NOT_EXPORTED (its run folder keeps the adapter sets and prototypes)."""
    if cfg.align.family in NOT_EXPORTED:
        return None
    merged = load_file(str(Path(run_dir) / "adapter.safetensors"))
    heads_file = load_file(str(Path(run_dir) / "heads.safetensors"))
    method = cfg.align.method
    heads = [heads_file[f"{method}.{t}"] for t in range(sum(k.startswith(method + ".") for k in heads_file))]
    num_classes = sum(len(h) for h in heads)
    return export_model(Path(run_dir) / "model", cfg, merged, heads, class_names(cfg, num_classes))


def export_model(out_dir: Path, cfg: ExperimentConfig, merged: Tensors, heads: list[torch.Tensor],
                 class_names: list[str]) -> Path:
    """Write the folder described above for one method's `heads` (list of [n_t, D], task order)."""
    from imlca.registries import BACKBONES

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lora = {k: v for k, v in merged.items() if not k.startswith((LN_PREFIX, DELTA_PREFIX))}
    space = "backbone" if cfg.align.family == "slca" else cfg.merge.space  # what the folder's weights are
    if space == "backbone":
        save_file({k: v.contiguous() for k, v in merged.items()}, str(folder / "backbone.safetensors"))
    elif space == "delta":
        save_file({k: v.contiguous() for k, v in folded_backbone(cfg, merged).items()},
                  str(folder / "backbone.safetensors"))
    else:
        lora_config(cfg).save_pretrained(str(folder / "adapter"))
        save_file({PEFT_PREFIX + k: v.contiguous() for k, v in lora.items()},
                  str(folder / "adapter" / "adapter_model.safetensors"))
    layer_norm = {k[len(LN_PREFIX):]: v.contiguous() for k, v in merged.items() if k.startswith(LN_PREFIX)}
    if layer_norm:
        save_file(layer_norm, str(folder / "layer_norm.safetensors"))
    weight = torch.cat(heads).contiguous()
    head = {"weight": weight[:, :-1].contiguous(), "bias": weight[:, -1].contiguous()} if space == "backbone" \
        else {"weight": weight}
    save_file(head, str(folder / "head.safetensors"))
    (folder / "classes.json").write_text(json.dumps(class_names))
    spec = BACKBONES[cfg.model.backbone]
    info = {"timm_name": spec.timm_name, "backbone": cfg.model.backbone, "image_size": cfg.data.image_size,
            "merge_space": space, "num_classes": int(weight.shape[0]), "config": _config_tree(cfg)}
    (folder / "model.json").write_text(json.dumps(info, indent=1))
    return folder


def _config_tree(cfg: ExperimentConfig) -> dict:
    from imlca.config import to_dict

    return to_dict(cfg)


# what an exported folder's weights are (model.json's merge_space) → the safetensors file that holds them
WEIGHT_FILES = {"factors": "adapter/adapter_model.safetensors", "delta": "backbone.safetensors",
                "backbone": "backbone.safetensors"}


def read_model_info(folder: Path) -> tuple[dict, ExperimentConfig]:
    """`folder/model.json` and the run's config in it, checked before anything else in the folder is read (a shared
    model folder is not trusted: docs/security.md). Weights load from safetensors only: a folder whose adapter is a
    pickled `adapter_model.bin` is refused here, never handed to peft."""
    path, fix = folder / "model.json", "give a folder written by imlca's export (a run's model/), or export it again"
    try:
        info = json.loads(path.read_text())
        if not isinstance(info, dict) or info.get("merge_space") not in WEIGHT_FILES:
            raise ValueError(f"no merge_space of {', '.join(WEIGHT_FILES)}")
        cfg = from_dict(ExperimentConfig, info.get("config"))
    except (OSError, ValueError, UserError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UserError(f"{path} is not an imlca model description ({' '.join(str(err).split())[:200]}); "
                        f"{fix}") from None
    weights = folder / WEIGHT_FILES[info["merge_space"]]
    if not weights.is_file():
        raise UserError(f"{folder} has no {weights.relative_to(folder)}; imlca reads weights from safetensors "
                        f"files only (a pickled adapter_model.bin is never loaded): {fix}")
    return info, cfg


class ExportedModel(torch.nn.Module):
    """Backbone (+ merged adapter) → pooled features → LayerNorm → head; `predict` names the classes of images."""

    def __init__(self, folder: Path):
        super().__init__()
        from peft import PeftModel

        folder = Path(folder)
        info, self.cfg = read_model_info(folder)
        backbone = fresh_backbone(self.cfg)
        if info["merge_space"] in ("delta", "backbone"):
            backbone.load_state_dict(load_file(str(folder / "backbone.safetensors")))
        else:
            backbone = PeftModel.from_pretrained(backbone, str(folder / "adapter")).base_model.model
        self.backbone = backbone.eval()
        ln_file = folder / "layer_norm.safetensors"
        self.ln = torch.nn.Identity()
        if ln_file.is_file():
            self.ln = torch.nn.LayerNorm(self.backbone.num_features)
            self.ln.load_state_dict(load_file(str(ln_file)))
        head = load_file(str(folder / "head.safetensors"))
        self.head, self.bias = head["weight"], head.get("bias")
        self.classes = json.loads((folder / "classes.json").read_text())
        self.transform = _transform(self.cfg, self.backbone)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] transformed images → logits [B, C] in class-order positions."""
        pooled = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        logits = self.ln(pooled) @ self.head.T
        return logits if self.bias is None else logits + self.bias

    def predict(self, images) -> list[str]:
        """PIL images or paths → class names."""
        from PIL import Image

        batch = torch.stack([self.transform(Image.open(i).convert("RGB") if isinstance(i, (str, Path)) else
                                            i.convert("RGB")) for i in images])
        return [self.classes[k] for k in self(batch).argmax(dim=1).tolist()]


def _transform(cfg: ExperimentConfig, backbone: torch.nn.Module):
    from imlca.data.transforms import build_transform

    mean, std = (getattr(backbone, "pretrained_cfg", {}).get(k, (0.5,) * 3) for k in ("mean", "std"))
    return build_transform(cfg.data, False, mean, std)
