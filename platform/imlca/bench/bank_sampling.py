"""`bank`: GaussianBank.sample (Cholesky factor cached per class) vs torch MultivariateNormal per class.

Both draw float64 N(μ_c, Σ_c) samples from the same bank statistics. First call: the bank factorises every
covariance, the reference builds one MultivariateNormal per class (it factorises too, and validates Σ with a
second factorisation, torch's default). Cached call: the bank reuses its factors, the reference samples from
MultivariateNormal objects built beforehand. The speed-up held to the goal is the smaller of the two. The
reference costs the same for every class, so with many classes it is timed on a subset and compared per class.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch.distributions import MultivariateNormal

from imlca.bench.measure import Measurement, Samples, Seconds, Settings, divide, medians, per_round, rounds
from imlca.core.gaussian_bank import GaussianBank

DIM, SAMPLES, COUNT, RANK = 768, 512, 1000, 64  # feature dim, draws per class, images behind each class, low rank
Z_RMS, Z_MAX, VAR_TOL = (0.8, 1.2), 6.0, 0.05  # moment tolerances, see `moments`


def bank_state(classes: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Sufficient statistics of `classes` Gaussians over DIM features, as GaussianBank.state_dict() stores them.

    Σ_c = s_c·F Fᵀ/64 + diag(d_c): a shared low-rank part (F [D, 64]) scaled per class plus a per-class diagonal,
    positive definite and cheap to build for 200 classes (each factorisation still costs a full D³/3).
    """
    f64 = dict(generator=generator, dtype=torch.float64)
    factor = torch.randn(DIM, RANK, **f64)  # [D, 64]
    low = factor @ factor.T / RANK  # [D, D]
    means = torch.randn(classes, DIM, **f64)  # [K, D]
    sumsq = torch.empty(classes, DIM, DIM, dtype=torch.float64)
    for c in range(classes):
        cov = low * (0.5 + 1.5 * c / classes) + torch.diag(torch.rand(DIM, **f64) + 0.1)
        sumsq[c] = (COUNT - 1) * cov + COUNT * torch.outer(means[c], means[c])  # Σxxᵀ = (n−1)Σ + n·μμᵀ
    return {"classes": torch.arange(classes), "count": torch.full((classes,), COUNT), "sum": COUNT * means,
            "sumsq": sumsq}


def moments(samples: torch.Tensor, bank: GaussianBank, classes: list[int]) -> dict[str, float]:
    """How far the draws [K·n, D] (class by class) are from each class's true mean and variances.

    z = (sample mean − μ) / sqrt(σ²/n) is N(0, 1) per class and dimension: its RMS is ≈ 1 and its largest |z| over
    K·D values stays below ~6. The sample variances over the true ones average ≈ 1.
    """
    x = samples.double().view(len(classes), -1, samples.shape[1])  # [K, n, D]
    mu = torch.stack([bank.mean(c) for c in classes])  # [K, D]
    var = torch.stack([bank.covariance(c).diagonal() for c in classes])  # [K, D]
    z = (x.mean(1) - mu) / (var / x.shape[1]).sqrt()  # [K, D]
    return {"mean_z_rms": z.pow(2).mean().sqrt().item(), "mean_z_max": z.abs().max().item(),
            "var_ratio": (x.var(1) / var).mean().item()}


def moments_ok(m: dict[str, float]) -> bool:
    return Z_RMS[0] <= m["mean_z_rms"] <= Z_RMS[1] and m["mean_z_max"] < Z_MAX and abs(m["var_ratio"] - 1) < VAR_TOL


def platform_call(state: dict, classes: list[int], keep: dict) -> Seconds:
    keep.pop("bank", None)  # free the last round's bank (2 × K·D² float64) before building the next
    bank = GaussianBank.from_state_dict(state)  # fresh: no factor cached yet
    gen = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    bank.sample(classes, SAMPLES, gen)
    first = time.perf_counter()
    keep["bank"], keep["bank_samples"] = bank, bank.sample(classes, SAMPLES, gen)[0]
    return {"bank_first": first - start, "bank_cached": time.perf_counter() - first}


def reference_call(bank: GaussianBank, classes: list[int], keep: dict) -> Seconds:
    torch.manual_seed(1)  # MultivariateNormal draws from the global generator
    first = cached = 0.0
    draws = []
    for c in classes:
        start = time.perf_counter()
        normal = MultivariateNormal(bank.mean(c), covariance_matrix=bank.covariance(c))
        built = time.perf_counter()
        draws.append(normal.sample((SAMPLES,)).float())  # [n, D]
        end = time.perf_counter()
        first, cached = first + end - start, cached + end - built
    keep["reference_samples"] = torch.cat(draws)
    return {"mvn_first": first, "mvn_cached": cached}


def bank_figures(samples: Samples, num_classes: int, num_reference: int) -> tuple[list[float], dict[str, float]]:
    """Speed-ups per class (the reference is timed on `num_reference` classes, the bank on all): per round the
    smaller of the first call's and the cached call's (the figure held to the goal); each one's median beside it."""
    def speedup(times: Seconds, call: str) -> float:
        return divide(times[f"mvn_{call}"] / num_reference, times[f"bank_{call}"] / num_classes)

    ratios = {call: statistics.median(per_round(samples, lambda times, call=call: speedup(times, call)))
              for call in ("first", "cached")}
    return per_round(samples, lambda times: min(speedup(times, "first"), speedup(times, "cached"))), ratios


def bytes_per_class(dim: int) -> dict[str, int]:
    """Tensor bytes the bank keeps per class: Σx [D] and Σxxᵀ [D, D] in float64 (and the count, an int); once it
    has sampled, also the cached float64 Cholesky factor [D, D]."""
    return {"statistics": 8 * (dim + dim * dim), "cholesky_factor": 8 * dim * dim}


def bench_bank(settings: Settings) -> Measurement:
    num_classes, num_reference, repeats = (4, 2, 3) if settings.quick else (200, 10, 3)
    state = bank_state(num_classes, torch.Generator().manual_seed(0))
    classes = list(range(num_classes))
    reference_classes = classes[:: num_classes // num_reference][:num_reference]
    keep: dict = {}  # the latest bank and draws, for the moment checks; the platform call of a round runs first
    samples = rounds([lambda: platform_call(state, classes, keep),
                      lambda: reference_call(keep["bank"], reference_classes, keep)], repeats, warmup=0)
    figures, ratios = bank_figures(samples, num_classes, num_reference)
    checks = {"bank_moments": moments(keep["bank_samples"], keep["bank"], classes),
              "reference_moments": moments(keep["reference_samples"], keep["bank"], reference_classes)}
    timings, sizes = medians(samples), bytes_per_class(DIM)
    details = {"classes": num_classes, "dim": DIM, "samples_per_class": SAMPLES, "reference_classes": num_reference,
               "repeats": repeats, "threads": torch.get_num_threads(), **checks, "bytes_per_class": sizes,
               "mvn_first_all_classes_estimated_s": timings["mvn_first"] / num_reference * num_classes}
    note = (f"{num_classes} classes × {DIM}-d, {SAMPLES} draws each; MultivariateNormal timed on {num_reference} "
            f"of them, speed-ups per class, the smaller held to the goal; per class the bank keeps "
            f"{sizes['statistics'] / 1e6:.2f} MB of float64 statistics + a {sizes['cholesky_factor'] / 1e6:.2f} MB "
            f"factor")
    return Measurement(figures, timings, ratios, {k: moments_ok(v) for k, v in checks.items()}, details, note=note)
