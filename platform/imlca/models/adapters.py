"""AdaptFormer adapters, parallel to each block, for the adapter families (EASE, MOS); one site per block.

ViT (`registries.BackboneSpec.adapter == "vit_mlp"`): the block's MLP branch becomes MLP(LN2(x)) + s·up(ReLU(
down(x))), x the post-attention residual stream, dropout on the bottleneck, no adapter LayerNorm (AdaptFormer as
EASE and MOS use it). The CNN (`"conv_block"`, tf_efficientnet_lite0, which has no MLP): the convolutional
analogue — an adaptation of ours, not the authors' — block(x) + s·up(ReLU(down(x))) with 1×1 convolutions, down
carrying the block's stride so the shapes meet. Both: down kaiming-uniform(a=√5), up and both biases zero, so a
fresh adapter leaves the backbone's output unchanged.

Each site holds ONE adapter module; a family loads the set it wants (`load_set`) before a pass, or switches all
sites off (`set_enabled(False)`: the plain pre-trained model). A set's tensors are keyed `<site>.<param>`.
MOS pulls the set toward a mean in place (`pull_set`), also before every block's use (`pulled_on_every_block`).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from imlca.registries import BACKBONES

Tensors = dict[str, torch.Tensor]


class Bottleneck(nn.Module):
    """s·up(dropout(ReLU(down(x)))): Linear for tokens [B, N, D], 1×1 Conv2d (down with `stride`) for maps."""

    def __init__(self, d_in: int, d_out: int, r: int, scale: float, dropout: float, conv: bool = False,
                 stride: int = 1):
        super().__init__()
        self.down = nn.Conv2d(d_in, r, 1, stride) if conv else nn.Linear(d_in, r)
        self.up = nn.Conv2d(r, d_out, 1) if conv else nn.Linear(r, d_out)
        self.scale, self.dropout = scale, dropout
        self.reset()

    def reset(self) -> None:
        """The "lora" initialisation of AdaptFormer: draws from torch's global RNG (seed it first)."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
            for tensor in (self.up.weight, self.down.bias, self.up.bias):
                nn.init.zeros_(tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = nn.functional.dropout(torch.relu(self.down(x)), self.dropout, self.training)
        return self.up(hidden) * self.scale


class ParallelMLP(nn.Module):
    """Takes a ViT block's MLP place (its LN2 moves inside, the block's norm2 becomes Identity): MLP(LN2(x)) +
    adapter(x)."""

    def __init__(self, norm: nn.Module, mlp: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.norm, self.mlp, self.adapter, self.enabled = norm, mlp, adapter, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mlp(self.norm(x))
        return out + self.adapter(x) if self.enabled else out


class ParallelBlock(nn.Module):
    """A CNN block with its parallel bottleneck: block(x) + adapter(x)."""

    def __init__(self, block: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.block, self.adapter, self.enabled = block, adapter, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + self.adapter(x) if self.enabled else out


def _conv_shape(block: nn.Module) -> tuple[int, int, int]:
    """(in channels, out channels, stride) of an EfficientNet block from its convolutions."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[0].in_channels, convs[-1].out_channels, max(c.stride[0] for c in convs)


def attach_adapters(backbone: nn.Module, name: str, r: int, scale: float, dropout: float) -> nn.Module:
    """Put one adapter site on every block of `backbone` (registry name `name`); freezes the backbone, leaves
    the adapters trainable. Raises ValueError where the backbone has no adapter definition."""
    kind = BACKBONES[name].adapter
    for param in backbone.parameters():
        param.requires_grad_(False)
    if kind == "vit_mlp":
        for block in backbone.blocks:
            dim = block.norm2.normalized_shape[0]
            block.mlp = ParallelMLP(block.norm2, block.mlp, Bottleneck(dim, dim, r, scale, dropout))
            block.norm2 = nn.Identity()
    elif kind == "conv_block":
        for stage in backbone.blocks:
            for j, block in enumerate(stage):
                d_in, d_out, stride = _conv_shape(block)
                stage[j] = ParallelBlock(block, Bottleneck(d_in, d_out, r, scale, dropout, True, stride))
    else:
        raise ValueError(f"backbone {name} has no adapter definition")
    return backbone


def sites(backbone: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in backbone.named_modules() if isinstance(m, (ParallelMLP, ParallelBlock))}


def read_set(backbone: nn.Module) -> Tensors:
    """The adapters' tensors, `<site>.<down|up>.<weight|bias>` (detached copies on the CPU)."""
    return {f"{n}.{k}": v.detach().cpu().clone() for n, m in sites(backbone).items()
            for k, v in m.adapter.state_dict().items()}


def load_set(backbone: nn.Module, state: Tensors) -> None:
    for n, m in sites(backbone).items():
        m.adapter.load_state_dict({k: state[f"{n}.{k}"] for k in m.adapter.state_dict()})
        m.enabled = True


def reset_set(backbone: nn.Module, seed: int) -> None:
    """A fresh adapter set, drawn from a generator seeded with `seed` (the same in every process)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in sites(backbone).values():
            m.adapter.reset()
            m.enabled = True


def set_enabled(backbone: nn.Module, enabled: bool) -> None:
    for m in sites(backbone).values():
        m.enabled = enabled


def adapter_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    return [p for m in sites(backbone).values() for p in m.adapter.parameters()]


def pull_set(backbone: nn.Module, mean: Tensors, momentum: float) -> None:
    """adapter ← (1 − m)·adapter + m·mean on every site, by assigning each parameter's `.data` as MOS does
    (backbone/vit_mos.py `reweight_adapter` l.328–346): autograd is not told, the optimiser keeps its state."""
    for n, m in sites(backbone).items():
        for k, p in m.adapter.named_parameters():
            p.data = (1 - momentum) * p.data + momentum * mean[f"{n}.{k}"]


@contextlib.contextmanager
def pulled_on_every_block(backbone: nn.Module, mean: Tensors, momentum: float):
    """While open, every site pulls the whole adapter set toward `mean` just before its block uses it, so block
    l of a forward sees it pulled l + 1 more times (backbone/vit_mos.py `forward_features` l.360–377)."""
    handles = [m.register_forward_pre_hook(lambda module, args: pull_set(backbone, mean, momentum))
               for m in sites(backbone).values()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
