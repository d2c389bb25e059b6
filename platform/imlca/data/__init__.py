"""Benchmarks: the registry, loaders for the on-disk formats, class-incremental splits, transforms."""
from imlca.data import embedded, synthetic, paper, cars  # noqa: F401  (registration)
from imlca.data.benchmark import Benchmark, load_benchmark
from imlca.data.registry import BENCHMARKS, register_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "load_benchmark", "register_benchmark"]
