"""Task vectors and the element-wise merge rules of incremental backbone merging (DESIGN §1 step 3).

The rules are branch-free arithmetic rather than `torch.where`: on CPU `torch.where` on a data-dependent mask
is several times slower than a chain of vectorised arithmetic passes, and a merge is benchmarked against it.
Every rule is exact: it selects or averages entries with multiplications by 0, ½ and 1 only.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

StateDict = dict[str, Tensor]

# Elements per pass: each rule makes several passes, and a chunk's temporaries (1 MiB each in float32) stay in
# cache between them, so a large tensor costs about one trip through memory instead of one per pass.
_CHUNK = 1 << 18


def max_abs(prev: Tensor, curr: Tensor) -> Tensor:
    # take = 1 where |curr| > |prev|, else 0 (an exact tie keeps prev); a − b > 0 ⟺ a > b in IEEE arithmetic
    take = curr.abs()
    take.sub_(prev.abs()).sign_().clamp_(min=0)
    out = torch.mul(curr, take)
    return out.addcmul_(prev, take.neg_().add_(1))  # curr·take + prev·(1 − take)


def ties(prev: Tensor, curr: Tensor) -> Tensor:
    # Elected sign = sign(sign(prev) + sign(curr)); the result is the mean of the entries carrying it. For two
    # entries that is (prev + curr)·w(q) with q = sign(prev)·sign(curr) ∈ {−1, 0, 1}:
    #   q = 1 (same sign) → ½ (their mean); q = 0 (a zero) → 1 (the other, or 0); q = −1 (opposite) → 0.
    # w(q) = (1 + q)(1 − ¾q) takes exactly these values in every float dtype.
    q = torch.sign(prev).mul_(torch.sign(curr))
    w = torch.mul(q, -0.75).add_(1)  # 1 − ¾q
    w.mul_(q.add_(1))  # (1 − ¾q)(1 + q)
    return torch.add(prev, curr).mul_(w)


def mean(prev: Tensor, curr: Tensor) -> Tensor:
    return torch.add(prev, curr).mul_(0.5)


Rule = Callable[[Tensor, Tensor], Tensor]  # element-wise (τ_prev, τ_curr) → τ_merged; named in imlca.registries


def _check_matching(first: StateDict, second: StateDict, names: tuple[str, str]) -> None:
    unmatched = [f"key '{k}' is in {names[0]} but not in {names[1]}" for k in sorted(first.keys() - second.keys())]
    unmatched += [f"key '{k}' is in {names[1]} but not in {names[0]}" for k in sorted(second.keys() - first.keys())]
    if unmatched:
        raise ValueError("; ".join(unmatched))
    for key, tensor in first.items():
        other = second[key]
        if tensor.shape != other.shape or tensor.dtype != other.dtype:
            raise ValueError(
                f"key '{key}': {names[0]} has {tuple(tensor.shape)} {tensor.dtype}, "
                f"{names[1]} has {tuple(other.shape)} {other.dtype}"
            )


def _chunked(fn: Callable[..., Tensor], *tensors: Tensor) -> Tensor:
    # fn on aligned flat chunks of same-shaped tensors, assembled into a new tensor of that shape
    if tensors[0].numel() <= _CHUNK:
        return fn(*tensors)
    flat = [t.reshape(-1) for t in tensors]
    out = torch.empty_like(flat[0])
    for start in range(0, out.numel(), _CHUNK):
        part = slice(start, start + _CHUNK)
        out[part] = fn(*(f[part] for f in flat))
    return out.view(tensors[0].shape)


def merge(previous: StateDict, current: StateDict, rule: Rule) -> StateDict:
    """Merge two task vectors element-wise with `rule` (one of `imlca.registries.MERGE_RULES`)."""
    _check_matching(previous, current, ("previous", "current"))
    return {key: _chunked(rule, prev, current[key]) for key, prev in previous.items()}


def task_vector(theta: StateDict, base: StateDict) -> StateDict:
    """τ = θ − θ_base."""
    _check_matching(theta, base, ("theta", "base"))
    return {key: torch.sub(value, base[key]) for key, value in theta.items()}


def apply_task_vector(base: StateDict, tau: StateDict, alpha: float) -> StateDict:
    """θ_base + α·τ."""
    _check_matching(base, tau, ("base", "tau"))
    return {key: torch.add(value, tau[key], alpha=alpha) for key, value in base.items()}


def incremental_merge(
    theta0: StateDict, merged_prev: StateDict, theta_t: StateDict, rule: Rule, alpha: float
) -> StateDict:
    """θ0 + α·merge(θ_merged(t−1) − θ0, θ_t − θ0): one running merge step for task t ≥ 1.

    The same arithmetic as `apply_task_vector(theta0, merge(task_vector(...), task_vector(...)), alpha)`, done
    chunk by chunk so that the temporaries stay in cache.
    """
    _check_matching(merged_prev, theta0, ("merged_prev", "theta0"))
    _check_matching(theta_t, theta0, ("theta_t", "theta0"))

    def step(base: Tensor, prev: Tensor, curr: Tensor) -> Tensor:
        return torch.add(base, rule(prev - base, curr - base), alpha=alpha)  # θ0 + α·merge(τ_prev, τ_curr)

    return {key: _chunked(step, base, merged_prev[key], theta_t[key]) for key, base in theta0.items()}


def _conv1x1_as_matrix(weight: Tensor, name: str) -> Tensor:
    if weight.shape[2:] != (1, 1):
        raise ValueError(f"{name} has shape {tuple(weight.shape)}; only 1×1 convolutions are supported")
    return weight[:, :, 0, 0]  # [out, in, 1, 1] -> [out, in]


def lora_delta(lora_A: Tensor, lora_B: Tensor, scaling: float) -> Tensor:
    """Dense update scaling·B·A of a LoRA Linear ([out, in]) or 1×1 Conv2d ([out, in, 1, 1]), as peft computes it."""
    if lora_A.dim() != lora_B.dim() or lora_A.dim() not in (2, 4):
        raise ValueError(
            f"lora_A {tuple(lora_A.shape)} and lora_B {tuple(lora_B.shape)} must both be 2-d (Linear) "
            "or both 4-d (1×1 Conv2d)"
        )
    conv = lora_A.dim() == 4
    a = _conv1x1_as_matrix(lora_A, "lora_A") if conv else lora_A  # [r, in]
    b = _conv1x1_as_matrix(lora_B, "lora_B") if conv else lora_B  # [out, r]
    if a.shape[0] != b.shape[1]:
        raise ValueError(f"rank mismatch: lora_A {tuple(lora_A.shape)} vs lora_B {tuple(lora_B.shape)}")
    # peft computes half-precision deltas on CPU in float32 and casts back (CPU half matmuls are slow)
    upcast = lora_A.device.type == "cpu" and lora_A.dtype in (torch.float16, torch.bfloat16)
    delta = (b.float() @ a.float() if upcast else b @ a) * scaling  # [out, in]
    delta = delta.to(lora_A.dtype)
    return delta[:, :, None, None] if conv else delta
