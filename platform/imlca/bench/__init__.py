"""`python -m imlca bench`: every performance target of DESIGN §6, measured as a ratio in one run.

The registry names each benchmark's goal and where its function lives; modules are imported only when their
benchmark runs, so `--only merge` does not pay for Ray, Tune or MLflow.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imlca.bench.measure import Goal, Measurement, Settings
from imlca.registries import resolve


@dataclass(frozen=True)
class Benchmark:
    goal: Goal
    target: str  # "module:function" taking Settings, returning a Measurement (Ray-using rows call
    # imlca.orchestration, the only package that imports Ray)

    def load(self) -> Callable[[Settings], Measurement]:
        return resolve(self.target)


BENCHMARKS: dict[str, Benchmark] = {
    "lora_worker": Benchmark(Goal("<=", 1.05, "x", "LoRA training inside a TaskWorker / the same loop in-process"),
                             "imlca.bench.worker_rows:bench_lora_worker"),
    "merge": Benchmark(Goal("<=", 1.5, "x", "running merge (ties, max_abs; factors, ΔW) / one torch.where pass"),
                       "imlca.bench.merge_speed:bench_merge"),
    "bank": Benchmark(Goal(">=", 5.0, "x", "MultivariateNormal per class / GaussianBank.sample (speed-up)"),
                      "imlca.bench.bank_sampling:bench_bank"),
    "handoff": Benchmark(Goal("<=", 2.0, "x", "adapter actor → object store → actor / in-process clone"),
                         "imlca.bench.worker_rows:bench_handoff"),
    "sweep": Benchmark(Goal("<=", 1.10, "x", "N trials through Tune + MLflow / the same N runs one after another"),
                       "imlca.bench.sweep_overhead:bench_sweep"),
    "gpu": Benchmark(Goal(">=", 0.40, "MFU", "ViT-B/16 LoRA training, 224 px, bf16: model FLOP utilisation"),
                     "imlca.bench.gpu:bench_gpu"),
}
