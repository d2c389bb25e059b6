"""Compact Gaussian-bank storage: exact factors on a hand-made bank, sampling error against the float64 bank."""
import pytest
import torch

from imlca.core.compact_bank import CompactBank, bank_bytes, covariance_error
from imlca.core.gaussian_bank import GaussianBank


def cross_bank() -> GaussianBank:
    # one class in 2-d from (±1, 0), (0, ±2): μ = 0, Σ = diag(2/3, 8/3) (unbiased, ridge 0)
    bank = GaussianBank(2, ridge=0.0)
    bank.update(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]), torch.zeros(4, dtype=torch.long))
    return bank


def test_factors_of_a_hand_made_bank():
    bank = cross_bank()
    chol = CompactBank(bank, "cholesky32")
    mu, factor = chol.factors[0]
    assert mu.dtype == torch.float32 and mu.tolist() == [0.0, 0.0]
    assert factor.flatten().tolist() == pytest.approx([(2 / 3) ** 0.5, 0.0, 0.0, (8 / 3) ** 0.5], rel=1e-6)
    assert chol.nbytes == 2 * 4 + 4 * 4  # μ + L in float32
    low = CompactBank(bank, "lowrank", rank=1)  # top eigenvector e₂ (8/3); the rest is diag(2/3, 0)
    _, vectors, root, rest = low.factors[0]
    assert vectors.abs().flatten().tolist() == [0.0, 1.0] and root.tolist() == pytest.approx([(8 / 3) ** 0.5])
    assert rest.tolist() == pytest.approx([(2 / 3) ** 0.5, 0.0], abs=1e-6)
    assert low.nbytes == (2 + 2 + 1 + 2) * 4
    assert covariance_error(bank, low, 0) == pytest.approx(0.0, abs=1e-6)
    assert bank_bytes(bank) == 8 + 8 + 2 * 8 + 4 * 8  # classes, count, Σx, Σxxᵀ


def random_bank(dim: int, classes: int, seed: int = 0) -> GaussianBank:
    gen = torch.Generator().manual_seed(seed)
    bank = GaussianBank(dim)
    for c in range(classes):
        mix = torch.randn(dim, dim, generator=gen, dtype=torch.float64) / dim ** 0.5
        feats = torch.randn(400, dim, generator=gen, dtype=torch.float64) @ mix + torch.randn(dim, generator=gen)
        bank.update(feats, torch.full((400,), c))
    return bank


def sampling_error(samples: torch.Tensor, bank: GaussianBank, classes: list[int]) -> tuple[float, float]:
    """Largest |mean error| in standard errors, and the largest relative Frobenius error of a sample covariance."""
    x = samples.double().view(len(classes), -1, bank.dim)
    z = max(float(((x[k].mean(0) - bank.mean(c)) / (bank.covariance(c).diagonal() / x.shape[1]).sqrt()).abs().max())
            for k, c in enumerate(classes))
    cov = max(float(torch.linalg.matrix_norm(torch.cov(x[k].T) - bank.covariance(c))
                    / torch.linalg.matrix_norm(bank.covariance(c))) for k, c in enumerate(classes))
    return z, cov


def test_cholesky32_samples_as_well_as_the_float64_bank():
    """Tolerance: with 20 000 draws of 16-d the sample covariance itself is ~3% off; float32 factors add < 0.5%."""
    bank, classes = random_bank(16, 3), [0, 1, 2]
    reference = sampling_error(bank.sample(classes, 20_000, torch.Generator().manual_seed(1))[0], bank, classes)
    compact = CompactBank(bank, "cholesky32")
    ours = sampling_error(compact.sample(classes, 20_000, torch.Generator().manual_seed(1))[0], bank, classes)
    assert ours[0] < 4.5 and reference[0] < 4.5  # |z| of 48 N(0, 1) values
    assert abs(ours[1] - reference[1]) < 0.005 and ours[1] < 0.06
    assert max(covariance_error(bank, compact, c) for c in classes) < 1e-6  # L Lᵀ in float32 vs Σ


def test_lowrank_keeps_variances_and_the_top_directions():
    bank, classes = random_bank(16, 2), [0, 1]
    full = CompactBank(bank, "lowrank", rank=16)  # every direction: Σ, plus the leftover diagonal clamped at the ridge
    assert max(covariance_error(bank, full, c) for c in classes) < 1e-3
    low = CompactBank(bank, "lowrank", rank=4)
    for c in classes:
        assert torch.allclose(low.covariance(c).diagonal(), bank.covariance(c).diagonal(), rtol=1e-5)
        assert 0 < covariance_error(bank, low, c) < 0.6
    samples, labels = low.sample(classes, 20_000, torch.Generator().manual_seed(2))
    assert labels.tolist() == [0] * 20_000 + [1] * 20_000
    assert sampling_error(samples, bank, classes)[0] < 4.5
    assert low.nbytes == 2 * (16 + 16 * 4 + 4 + 16) * 4 < bank_bytes(bank)
