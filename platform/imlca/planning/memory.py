"""A trial's peak resident memory, by arithmetic on its work: what its Gaussian bank, its trajectory and its
alignments hold (the `memory` bench row measures the same workload and shows this figure beside its own).

C classes after the last task, D the feature dim, n `align.samples_per_class`, in bytes:
- statistics: C·(D² + D + 1)·8 (float64 count, Σx, Σxxᵀ), once: a bank reads the tensors it is given
- factors: C·D²·8 per bank (Cholesky factors, cached per class), one bank per `align.ridge` value of the trial
- heads: variants × methods × C·D·4 (float32), and the trajectory's own heads
- samples: C·n·(4D + 16) (the largest alignment's float32 draws, their targets and order), one alignment at a time
- features (trials on the trajectory cache): Σ_t (test_≤t + val_≤t)·(4D + 8), every task's cached features
- the process: Python, torch and the platform's imports (`PROCESS_BYTES`, measured here: the RSS of a process that
  imported what a cached trial imports)
A cached trial reads its trajectory from one file: while it loads, the file's bytes and the tensors made from them
are both held, so its peak is the process + the larger of (2 × trajectory) and (trajectory + factors + heads +
samples). Not counted: a model and loaders (a trial that trains its trajectory frees them before it aligns), LoRA
adapters (a few MB per task), allocator slack (small: a process that only aligns hands freed large blocks back,
engine/allocator.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from imlca.planning.workload import TrialWork

ALIGNING = ("factors", "heads", "samples")
PROCESS_BYTES = 1.0e9  # RSS after `import imlca.orchestration.tune_cached` here: 1.0 GB (torch 2.14, CPU build)


@dataclass(frozen=True)
class TrialMemory:
    parts: dict[str, float]  # bytes: statistics, factors, heads, samples, features, loading, process
    peak: float  # bytes: the process + the larger of loading and aligning


def trial_memory(trial: TrialWork, dim: int, cached: bool) -> TrialMemory:
    """The trial's peak (cached: a grouped trial on the trajectory cache; else the CentralActor of a plain run)."""
    a, last = trial.cfg.align, trial.tasks[-1]
    classes = last.classes
    trajectory = {"statistics": classes * (dim * dim + dim + 1) * 8.0,
                  "features": sum((t.test + t.val) * (4.0 * dim + 8) for t in trial.tasks) if cached else 0.0}
    trajectory_bytes = sum(trajectory.values()) + (classes * dim * 4.0 if cached else 0.0)  # + its heads
    aligning = {"factors": trial.banks * classes * dim * dim * 8.0,
                "heads": trial.variants * len(a.methods) * classes * dim * 4.0,
                "samples": classes * a.samples_per_class * (4.0 * dim + 16)}
    loading = trajectory_bytes if cached else 0.0  # the file's bytes beside the tensors made from them
    parts = {**trajectory, **aligning, "loading": loading, "process": PROCESS_BYTES}
    peak = PROCESS_BYTES + trajectory_bytes + max(loading, sum(aligning.values()))
    return TrialMemory(parts, peak)


def describe(memory: TrialMemory) -> str:
    """'4.3 GiB at its peak: process 0.93 + statistics 1.32 + features 0.24 + the larger of loading 1.56 and
    aligning 1.79 (factors 1.32, heads 0.03, samples 0.44) GiB'; zero parts left out."""
    gib, p = 2**30, memory.parts

    def part(key: str) -> str:
        return f"{key} {p[key] / gib:.2f}"

    aligning = sum(p[k] for k in ALIGNING)
    fixed = " + ".join(part(k) for k in ("process", "statistics", "features") if p[k])
    inner = ", ".join(part(k) for k in ALIGNING if p[k])
    aligned = f"aligning {aligning / gib:.2f} ({inner})"
    rest = f"the larger of loading {p['loading'] / gib:.2f} and {aligned}" if p["loading"] else aligned
    return f"{memory.peak / gib:.1f} GiB at its peak: {fixed} + {rest} GiB"
