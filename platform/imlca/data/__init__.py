"""Benchmarks (listed in `imlca.registries.BENCHMARKS`): loaders for the on-disk formats, class-incremental
splits, transforms."""
from imlca.data.benchmark import Benchmark, load_benchmark

__all__ = ["Benchmark", "load_benchmark"]
