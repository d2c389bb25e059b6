"""Merge spaces (listed in `imlca.registries.MERGE_SPACES`): what a task's adapter looks like when it is merged
(DESIGN §1 step 3).

`factors` (the reference): LoRA A and B (and the LayerNorm affine) merged element-wise, separately.
`delta`: the dense update ΔW = s·B·A per layer is merged; the merged ΔW lives in the base weights (W0 + ΔW) and
each task's LoRA restarts from θ0 on top of it, so the model a task starts from is still the merged one.
"""
from __future__ import annotations

import torch

from imlca.core.merging import lora_delta
from imlca.models.lora import base_weights, lora_modules, set_base_offsets
from imlca.models.model import LN_PREFIX, IncrementalModel

DELTA_PREFIX = "delta."


class FactorSpace:
    def __init__(self, model: IncrementalModel, scaling: float):
        self.theta0 = model.adapter()

    def initial(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.theta0.items()}

    def load(self, model: IncrementalModel, merged: dict[str, torch.Tensor]) -> None:
        model.load_adapter(merged)

    def read(self, model: IncrementalModel) -> dict[str, torch.Tensor]:
        return model.adapter()


class DeltaSpace:
    def __init__(self, model: IncrementalModel, scaling: float):
        self.factors0 = model.adapter()
        self.w0 = base_weights(model.backbone)
        self.scaling = scaling

    def initial(self) -> dict[str, torch.Tensor]:
        state = {DELTA_PREFIX + name: torch.zeros_like(w) for name, w in self.w0.items()}
        state.update({k: v.clone() for k, v in self.factors0.items() if k.startswith(LN_PREFIX)})
        return state

    def load(self, model: IncrementalModel, merged: dict[str, torch.Tensor]) -> None:
        offsets = {name: merged[DELTA_PREFIX + name] for name in self.w0}
        set_base_offsets(model.backbone, self.w0, offsets)
        factors = {k: (merged[k] if k.startswith(LN_PREFIX) else v) for k, v in self.factors0.items()}
        model.load_adapter(factors)

    def read(self, model: IncrementalModel) -> dict[str, torch.Tensor]:
        """Total dense update of each layer: the offset it started from + s·B·A of what it trained."""
        factors = model.adapter()
        state = {}
        for name, module in lora_modules(model.backbone).items():
            offset = module.base_layer.weight.detach() - self.w0[name]
            delta = lora_delta(factors[f"{name}.lora_A.weight"], factors[f"{name}.lora_B.weight"], self.scaling)
            state[DELTA_PREFIX + name] = offset + delta.to(offset.dtype)
        state.update({k: v for k, v in factors.items() if k.startswith(LN_PREFIX)})
        return state

