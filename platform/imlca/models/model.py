"""The incremental model: frozen timm backbone with LoRA and an optional trainable LayerNorm (heads live in the
merge state: one set per method)."""
from __future__ import annotations

import torch
from torch import nn

from imlca.config import ExperimentConfig
from imlca.models.backbone import create_backbone
from imlca.registries import BACKBONES
from imlca.models.lora import adapter_state, attach_lora, load_adapter_state, lora_modules

LN_PREFIX = "ln."  # adapter keys of the optional LayerNorm, merged like the LoRA factors


class IncrementalModel(nn.Module):
    def __init__(self, backbone: nn.Module, layer_norm: bool):
        super().__init__()
        self.backbone = backbone
        self.dim = backbone.num_features
        self.ln = nn.LayerNorm(self.dim) if layer_norm else nn.Identity()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] → [B, D] pooled pre-logits features (CLS token for ViTs)."""
        pooled = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return self.ln(pooled)

    forward = features

    def freeze_statistics(self) -> "IncrementalModel":
        """Eval mode everywhere (statistics, evaluation): BatchNorm running statistics fixed, no dropout."""
        return self.eval()

    def train_adapters(self) -> "IncrementalModel":
        """The mode LoRA trains in: eval everywhere (BatchNorm statistics stay frozen, DESIGN §5; the backbone's
        own dropout stays off), except peft's LoRA dropout on each adapter's input, which acts (lora.dropout)."""
        self.eval()
        for module in lora_modules(self.backbone).values():
            module.lora_dropout.train()  # ModuleDict of nn.Dropout (nn.Identity when lora.dropout is 0)
        return self

    def adapter(self) -> dict[str, torch.Tensor]:
        """The trainable backbone state: LoRA factors plus the LayerNorm affine (when present)."""
        state = adapter_state(self.backbone)
        if isinstance(self.ln, nn.LayerNorm):
            state.update({LN_PREFIX + k: v.detach().clone() for k, v in self.ln.state_dict().items()})
        return state

    def load_adapter(self, state: dict[str, torch.Tensor]) -> None:
        lora = {k: v for k, v in state.items() if not k.startswith(LN_PREFIX)}
        load_adapter_state(self.backbone, lora)
        if isinstance(self.ln, nn.LayerNorm):
            self.ln.load_state_dict({k[len(LN_PREFIX):]: v for k, v in state.items() if k.startswith(LN_PREFIX)})

    def trainable_parameters(self) -> list[nn.Parameter]:
        """LoRA factors + LayerNorm; the new head is added by the trainer."""
        params = [p for n, p in self.backbone.named_parameters() if "lora_" in n]
        return params + list(self.ln.parameters())


def build_model(cfg: ExperimentConfig) -> IncrementalModel:
    """Backbone with LoRA at θ0, both seeded by cfg.seed (identical in every process), and no heads yet."""
    spec = BACKBONES[cfg.model.backbone]
    with torch.random.fork_rng(devices=[]):  # a randomly initialised backbone must be the same in every process
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.model.backbone, cfg.model.pretrained, cfg.model.checkpoint,
                                   cfg.data.image_size, cfg.model.pretrained_tag)
    backbone = attach_lora(backbone, cfg.lora, cfg.lora.target or spec.lora_target, cfg.seed)
    for name, param in backbone.named_parameters():
        param.requires_grad_("lora_" in name)
    return IncrementalModel(backbone, cfg.model.layer_norm).freeze_statistics()


def build_full_model(cfg: ExperimentConfig, fresh_final_norm: bool = False) -> IncrementalModel:
    """The backbone alone, every parameter trainable (no adapters, no LayerNorm after it): the families that
    fine-tune the whole backbone (SLCA). `fresh_final_norm`: the ViT's final LayerNorm reset to weight 1, bias 0
    (SLCA's original code on in21k weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.model.backbone, cfg.model.pretrained, cfg.model.checkpoint,
                                   cfg.data.image_size, cfg.model.pretrained_tag)
    if fresh_final_norm:
        backbone.norm.reset_parameters()
    return IncrementalModel(backbone, layer_norm=False).freeze_statistics()


def build_adapter_model(cfg: ExperimentConfig, bottleneck: int, scale: float, dropout: float) -> IncrementalModel:
    """The frozen backbone with one AdaptFormer site per block (models/adapters.py), the adapters at a fresh
    draw from cfg.seed: the adapter families (EASE, MOS)."""
    from imlca.models.adapters import attach_adapters

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(cfg.model.backbone, cfg.model.pretrained, cfg.model.checkpoint,
                                   cfg.data.image_size, cfg.model.pretrained_tag)
        backbone = attach_adapters(backbone, cfg.model.backbone, bottleneck, scale, dropout)
    return IncrementalModel(backbone, layer_norm=False).freeze_statistics()
