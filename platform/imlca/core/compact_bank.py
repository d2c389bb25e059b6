"""Compact storage of a GaussianBank for sampling at paper scale (200 classes × 768² float64 = 0.94 GB).

Two forms, both built from the bank's float64 statistics and sampled like `GaussianBank.sample`:
- `cholesky32`: μ_c and the Cholesky factor L_c of Σ_c in float32 (half the bytes of one float64 matrix; the
  factor's upper triangle is zero but kept dense so that sampling is one matmul). Samples: μ + L ε in float32.
- `lowrank`: μ_c, the top-`rank` eigenvectors U_c [D, r] with eigenvalues s_c, and the diagonal d_c of what they
  leave over (clamped at the ridge), float32: Σ ≈ U diag(s) Uᵀ + diag(d), (D·r + r + 2D)·4 bytes per class.
  Samples: μ + U (√s ⊙ ε₁) + √d ⊙ ε₂. The covariance it samples keeps the variance of every dimension exactly
  (diag(U s Uᵀ) + d = diag(Σ) unless clamped) and the top-r correlations; `covariance_error` says how far it is.
"""
from __future__ import annotations

import torch
from torch import Tensor

from imlca.core.gaussian_bank import GaussianBank

FORMS = ("cholesky32", "lowrank")
_F32 = torch.float32


class CompactBank:
    def __init__(self, bank: GaussianBank, form: str = "cholesky32", rank: int = 64):
        if form not in FORMS:
            raise ValueError(f"unknown compact form '{form}'; use one of {', '.join(FORMS)}")
        if form == "lowrank" and not 1 <= rank <= bank.dim:
            raise ValueError(f"rank must be in 1..{bank.dim}, got {rank}")
        self.dim, self.form, self.rank = bank.dim, form, rank
        self.factors: dict[int, tuple[Tensor, ...]] = {}  # class → float32 tensors of the form
        for c in bank.classes:
            mu, cov = bank.mean(c), bank.covariance(c)  # [D], [D, D] float64
            if form == "cholesky32":
                self.factors[c] = (mu.to(_F32), bank._cholesky(c).to(_F32))
            else:
                values, vectors = torch.linalg.eigh(cov)  # ascending
                values, vectors = values[-rank:].clamp_min(0), vectors[:, -rank:]  # [r], [D, r]
                rest = (cov.diagonal() - (vectors ** 2) @ values).clamp_min(bank.ridge)  # [D]
                self.factors[c] = (mu.to(_F32), vectors.to(_F32), values.sqrt().to(_F32), rest.sqrt().to(_F32))

    @property
    def classes(self) -> list[int]:
        return sorted(self.factors)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for parts in self.factors.values() for t in parts)

    def covariance(self, c: int) -> Tensor:
        """The covariance this storage samples from, [D, D] float64."""
        parts = [t.double() for t in self.factors[c]]
        if self.form == "cholesky32":
            return parts[1] @ parts[1].T
        _, vectors, root, rest = parts
        return (vectors * root ** 2) @ vectors.T + torch.diag(rest ** 2)

    def sample(self, classes: list[int], n_per_class: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """As GaussianBank.sample: features float32 [K·n, D] and labels int64 [K·n], class by class."""
        out = torch.empty(len(classes), n_per_class, self.dim)
        for k, c in enumerate(classes):
            parts = self.factors[c]
            if self.form == "cholesky32":
                eps = torch.randn(n_per_class, self.dim, generator=generator)  # [n, D]
                out[k] = torch.addmm(parts[0], eps, parts[1].T)  # μ + L ε, row-wise
            else:
                mu, vectors, root, rest = parts
                low = torch.randn(n_per_class, self.rank, generator=generator) * root  # [n, r]
                out[k] = mu + low @ vectors.T + torch.randn(n_per_class, self.dim, generator=generator) * rest
        labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(n_per_class)
        return out.view(-1, self.dim), labels


def bank_bytes(bank: GaussianBank) -> int:
    """Bytes of the float64 statistics (count, Σx, Σxxᵀ) the bank keeps, without its cached factors."""
    state = bank.state_dict()
    return sum(t.numel() * t.element_size() for t in state.values())


def covariance_error(bank: GaussianBank, compact: CompactBank, c: int) -> float:
    """‖Σ_compact − Σ‖_F / ‖Σ‖_F for class c."""
    cov = bank.covariance(c)
    return float(torch.linalg.matrix_norm(compact.covariance(c) - cov) / torch.linalg.matrix_norm(cov))
