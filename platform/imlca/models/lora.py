"""LoRA through peft: attach by regex, read and write the adapter tensors, fold a dense update into the base.

Adapter dicts map peft's state-dict names (`blocks.0.attn.qkv.lora_A.weight`) to tensors.
"""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from torch import nn

from imlca.config import LoRAConfig
from imlca.config.experiment import LORA_INITS


def attach_lora(backbone: nn.Module, cfg: LoRAConfig, target: str, seed: int) -> nn.Module:
    """Inject LoRA into every module whose full name matches `target`; freeze everything else.

    The random A factors (θ0) come from a generator seeded with `seed`, so every process builds the same θ0.
    """
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=target,
                          init_lora_weights=LORA_INITS[cfg.init], bias="none")
    for param in backbone.parameters():
        param.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = inject_adapter_in_model(peft_cfg, backbone)
    if not lora_modules(backbone):
        raise ValueError(f"lora.target '{target}' matches no module of the backbone")
    return backbone


def lora_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Module name → peft LoRA layer."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = set(get_peft_model_state_dict(model))
    if set(state) != expected:
        missing = sorted(expected - set(state)) or sorted(set(state) - expected)
        raise ValueError(f"adapter does not fit the model (first differing key: {missing[0]})")
    set_peft_model_state_dict(model, state)


def scaling(cfg: LoRAConfig) -> float:
    return cfg.alpha / cfg.rank


def base_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copy of the frozen base weight under every LoRA layer (the W0 a dense offset is added to)."""
    return {name: m.base_layer.weight.detach().clone() for name, m in lora_modules(model).items()}


def set_base_offsets(model: nn.Module, w0: dict[str, torch.Tensor], offsets: dict[str, torch.Tensor]) -> None:
    """base weight := W0 + offset, per LoRA layer (the dense merge space keeps its merged ΔW here)."""
    with torch.no_grad():
        for name, module in lora_modules(model).items():
            module.base_layer.weight.copy_(w0[name] + offsets[name].to(w0[name].dtype))
