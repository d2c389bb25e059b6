"""Per-class Gaussian feature statistics (DESIGN §1 step 2) and sampling from them (step 4).

The bank keeps sufficient statistics (count, Σx, Σxxᵀ) in float64, so partial statistics computed by different
workers add up to the statistics of the pooled data; mean and covariance are derived on demand.

A bank never changes a tensor in place: a class's first statistics are kept as given (a `merge` or `from_state_dict`
reads the other bank's or the state's tensors, no copy) and later ones are added out of place. So at 768-d, where
Σxxᵀ is 4.7 MB a class, the statistics live once in a process: in the trajectory or task output they came from.
"""
from __future__ import annotations

import torch
from torch import Tensor

from imlca.errors import CheckpointError

_F64 = torch.float64


class GaussianBank:
    def __init__(self, dim: int, ridge: float = 1e-4):
        if dim < 1:
            raise ValueError(f"feature dim must be positive, got {dim}")
        self.dim, self.ridge = dim, ridge
        self._count: dict[int, int] = {}
        self._sum: dict[int, Tensor] = {}  # class -> Σx [D], float64
        self._sumsq: dict[int, Tensor] = {}  # class -> Σxxᵀ [D, D], float64
        self._chol: dict[int, Tensor] = {}  # class -> Cholesky factor of covariance(c) [D, D], float64

    @property
    def classes(self) -> list[int]:
        return sorted(self._count)

    def _add(self, c: int, count: int, total: Tensor, outer: Tensor) -> None:
        if c in self._count:  # out of place: `total` and `outer` of the first add may be another owner's tensors
            self._count[c] += count
            self._sum[c] = self._sum[c] + total
            self._sumsq[c] = self._sumsq[c] + outer
        else:
            self._count[c], self._sum[c], self._sumsq[c] = count, total, outer
        self._chol.pop(c, None)

    def update(self, features: Tensor, labels: Tensor) -> None:
        """Accumulate features [N, D] of classes labels [N] (any integer ids)."""
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}], got {tuple(features.shape)}")
        if labels.shape != features.shape[:1] or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer [{features.shape[0]}], got {labels.dtype} {tuple(labels.shape)}")
        x = features.detach().to("cpu", _F64)  # [N, D]
        labels = labels.detach().cpu()
        for c in labels.unique().tolist():
            xc = x[labels == c]  # [n_c, D]
            self._add(int(c), xc.shape[0], xc.sum(0), xc.T @ xc)

    def merge(self, other: GaussianBank) -> None:
        """Add another bank's statistics, as if its data had been passed to `update` (its tensors are read, not
        copied: neither bank changes them)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge a bank of dim {other.dim} into one of dim {self.dim}")
        for c in other.classes:
            self._add(c, other._count[c], other._sum[c], other._sumsq[c])

    def _require(self, c: int) -> int:
        if c not in self._count:
            raise ValueError(f"class {c} is not in the Gaussian bank (it holds {self.classes})")
        return self._count[c]

    def mean(self, c: int) -> Tensor:
        n = self._require(c)
        return self._sum[c] / n  # [D] float64

    def covariance(self, c: int) -> Tensor:
        """Unbiased covariance + ridge·I, [D, D] float64."""
        n = self._require(c)
        if n < 2:
            raise ValueError(f"class {c} has {n} sample; a covariance needs at least 2")
        mu = self._sum[c] / n
        cov = (self._sumsq[c] - n * torch.outer(mu, mu)) / (n - 1)
        cov = (cov + cov.T) / 2  # exact symmetry for the Cholesky factorisation
        return cov + self.ridge * torch.eye(self.dim, dtype=_F64)

    def _cholesky(self, c: int) -> Tensor:
        if c not in self._chol:
            factor, info = torch.linalg.cholesky_ex(self.covariance(c))
            if info.item() != 0:
                raise ValueError(f"covariance of class {c} is not positive definite; raise the ridge ({self.ridge})")
            self._chol[c] = factor
        return self._chol[c]

    def means(self, classes: list[int]) -> Tensor:
        return torch.stack([self.mean(c) for c in classes]).float()  # [K, D]

    def sample(self, classes: list[int], n_per_class: int, generator: torch.Generator,
               mean_scale: list[float] | None = None) -> tuple[Tensor, Tensor]:
        """n_per_class draws from N(μ_c, Σ_c) per class, class by class in the order given; with `mean_scale`
        (one factor per class) from N(s_c·μ_c, Σ_c) (SLCA's mean shrink).

        Returns features float32 [K·n, D] and labels int64 [K·n] (the class ids).
        """
        out = torch.empty(len(classes) * n_per_class, self.dim)
        for k, c in enumerate(classes):
            factor, mu = self._cholesky(c), self.mean(c) * (1.0 if mean_scale is None else mean_scale[k])
            eps = torch.randn(n_per_class, self.dim, generator=generator, dtype=_F64)  # [n, D]
            out[k * n_per_class : (k + 1) * n_per_class] = torch.addmm(mu, eps, factor.T)  # μ + L ε, row-wise
        labels = torch.tensor(classes, dtype=torch.int64).repeat_interleave(n_per_class)
        return out, labels

    def state_dict(self) -> dict[str, Tensor]:
        cls = self.classes
        empty = (torch.zeros(0, self.dim, dtype=_F64), torch.zeros(0, self.dim, self.dim, dtype=_F64))
        return {
            "classes": torch.tensor(cls, dtype=torch.int64),
            "count": torch.tensor([self._count[c] for c in cls], dtype=torch.int64),
            "sum": torch.stack([self._sum[c] for c in cls]) if cls else empty[0],  # [K, D]
            "sumsq": torch.stack([self._sumsq[c] for c in cls]) if cls else empty[1],  # [K, D, D]
        }

    def class_tensors(self) -> dict[str, Tensor]:
        """`state_dict` with Σxxᵀ per class (`sumsq.<class>` [D, D]) instead of stacked: the bank's own tensors, so a
        checkpoint writes them without a second copy of the bank in memory. `from_state_dict` reads both layouts."""
        cls = self.classes
        state = self.state_dict() if not cls else {
            "classes": torch.tensor(cls, dtype=torch.int64),
            "count": torch.tensor([self._count[c] for c in cls], dtype=torch.int64),
            "sum": torch.stack([self._sum[c] for c in cls])}  # [K, D]: small
        return {**state, **{f"sumsq.{c}": self._sumsq[c] for c in cls}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], ridge: float = 1e-4) -> GaussianBank:
        """The bank of `state_dict()` or `class_tensors()`; it reads the state's tensors (no copy)."""
        outer = _check_state(state)
        bank = cls(state["sum"].shape[1], ridge)
        for c, n, total, sq in zip(state["classes"].tolist(), state["count"].tolist(), state["sum"], outer):
            bank._add(c, n, total.to(_F64), sq.to(_F64))
        return bank


def _check_state(state: dict[str, Tensor]) -> list[Tensor]:
    """Σxxᵀ of each class in the order of state["classes"] ([D, D] each), once the state's shapes check out."""
    per_class = "sumsq" not in state and any(key.startswith("sumsq.") for key in state)
    missing = sorted(({"classes", "count", "sum"} | (set() if per_class else {"sumsq"})) - state.keys())
    if missing:
        raise CheckpointError(f"Gaussian bank state lacks '{missing[0]}'; the checkpoint is corrupt, write it again")
    k = state["classes"].shape[0]
    d = state["sum"].shape[-1] if state["sum"].dim() == 2 else 0
    expected = {"classes": (k,), "count": (k,), "sum": (k, d)}
    if per_class:
        expected.update({f"sumsq.{c}": (d, d) for c in state["classes"].tolist()})
    else:
        expected["sumsq"] = (k, d, d)
    for key, shape in expected.items():
        found = tuple(state[key].shape) if key in state else "none"
        if found != shape or (key == "sum" and d < 1):
            raise CheckpointError(
                f"Gaussian bank state '{key}' has shape {found}, expected {shape} with D ≥ 1; "
                "the checkpoint is corrupt, write it again"
            )
    if state["classes"].unique().numel() != k:
        raise CheckpointError("Gaussian bank state repeats a class id; the checkpoint is corrupt, write it again")
    return [state[f"sumsq.{c}"] for c in state["classes"].tolist()] if per_class else list(state["sumsq"])
