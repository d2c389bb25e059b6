"""`bank_bytes`: memory of the Gaussian bank at paper scale (200 classes × 768-d) and of its compact forms.

The float64 statistics (count, Σx, Σxxᵀ) the bank keeps against `CompactBank`'s float32 Cholesky factors and its
low-rank (64) + diagonal form; the ratio held to the goal is the Cholesky form's bytes over the statistics'.
Each compact form's draws are checked against the float64 bank's moments (as the `bank` row checks its own).
"""
from __future__ import annotations

import time

import torch

from imlca.bench.bank_sampling import SAMPLES, bank_state, moments, moments_ok
from imlca.bench.measure import Measurement, Settings, divide
from imlca.core.compact_bank import CompactBank, bank_bytes, covariance_error
from imlca.core.gaussian_bank import GaussianBank

RANK = 64


def bench_bank_bytes(settings: Settings) -> Measurement:
    num_classes = 8 if settings.quick else 200
    bank = GaussianBank.from_state_dict(bank_state(num_classes, torch.Generator().manual_seed(0)))
    classes = bank.classes
    sizes, timings, checks, details = {"float64_statistics": bank_bytes(bank)}, {}, {}, {}
    for form in ("cholesky32", "lowrank"):
        start = time.perf_counter()
        compact = CompactBank(bank, form, RANK)
        timings[f"{form}_build"] = time.perf_counter() - start
        sizes[form] = compact.nbytes
        start = time.perf_counter()
        samples = compact.sample(classes, SAMPLES, torch.Generator().manual_seed(1))[0]
        timings[f"{form}_sample"] = time.perf_counter() - start
        details[f"{form}_moments"] = moments(samples, bank, classes)
        details[f"{form}_covariance_error_max"] = max(covariance_error(bank, compact, c) for c in classes[:8])
        checks[f"{form}_moments"] = moments_ok(details[f"{form}_moments"])
        del compact, samples
    ratios = {form: divide(sizes[form], sizes["float64_statistics"]) for form in ("cholesky32", "lowrank")}
    gb = {k: v / 1e9 for k, v in sizes.items()}
    note = (f"{num_classes} classes × 768-d: float64 statistics {gb['float64_statistics']:.3f} GB, float32 "
            f"Cholesky {gb['cholesky32']:.3f} GB, low-rank {RANK} + diagonal {gb['lowrank']:.3f} GB")
    return Measurement(ratios["cholesky32"], timings, ratios, checks, {"bytes": sizes, **details}, note=note)
