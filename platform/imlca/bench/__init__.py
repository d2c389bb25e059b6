"""`python -m imlca bench`: every performance target of DESIGN §6, measured as a ratio in one run, with its spread
over repeats and a verdict (met / missed / not resolved: `measure.verdict`).

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
    "loader": Benchmark(Goal(">=", 10.0, "x", "training images/s per CPU core, same crop + flip: decoded-image cache "
                                              "+ batched augmentation on the run's device / JPEG decoding"),
                        "imlca.bench.loader_speed:bench_loader"),
    "end_to_end": Benchmark(Goal("<=", 1.05, "x", "embedded-size run on Ray with checkpoints / same run in a bare "
                                                  "process, both on the same cores"),
                            "imlca.bench.end_to_end:bench_end_to_end"),
    "task_overhead": Benchmark(Goal("<=", 0.01, "fraction", "per-task time in which no actor computes / time in "
                                    "which one does"), "imlca.bench.end_to_end:bench_task_overhead"),
    "sweep": Benchmark(Goal("<=", 1.0, "s", "fixed seconds per warm trial (Tune, actors, MLflow) beyond the "
                                             "in-process run"),
                       "imlca.bench.sweep_overhead:bench_sweep"),
    "lambda_sweep": Benchmark(Goal("<=", 1.3, "x", "λ sweep of k values through Tune + MLflow / (one bare run + k "
                                   "alignments)"), "imlca.bench.lambda_sweep:bench_lambda_sweep"),
    "gpu": Benchmark(Goal(">=", 0.40, "MFU", "ViT-B/16 LoRA training, 224 px, bf16: model FLOP utilisation"),
                     "imlca.bench.gpu:bench_gpu"),
    # `bench --gpu` runs this one alone: it needs only torch, torchvision, timm and peft (no Ray, no MLflow)
    "gpu_paths": Benchmark(Goal(">=", 0.40, "MFU", "ViT-B/16 LoRA, 224 px, bf16, fed from the image cache: MFU "
                                                   "(beside the synthetic loop and the JPEG path)"),
                           "imlca.bench.gpu_paths:bench_gpu_paths"),
    "memory": Benchmark(Goal("<=", 1.2, "x", "peak RSS of a grouped λ trial with 12 variants / with 1, 200 classes × "
                                              "768-d bank, each in a fresh process"),
                        "imlca.bench.memory:bench_memory"),
    "ease_eval": Benchmark(Goal(">=", 3.0, "x", "EASE's evaluation of 10 tasks, features recomputed at every task / "
                                                "each frozen adapter's test features kept (speed-up)"),
                           "imlca.bench.ease_eval:bench_ease_eval"),
    "plan": Benchmark(Goal("<=", 0.2, "fraction", "|predicted / measured - 1|: `imlca plan --probe` of the embedded "
                                                   "sweep vs that sweep run right after it"),
                      "imlca.bench.plan_row:bench_plan"),
    "remote_data": Benchmark(Goal(">=", 2.0, "x", "a new node's start from a bucket (loopback S3), cached pipeline: "
                                                   "download + decode the JPEGs / fetch the decoded copy"),
                             "imlca.bench.remote_data:bench_remote_data"),
}
