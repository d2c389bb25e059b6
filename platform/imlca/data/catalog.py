"""`describe_benchmarks`: the registered benchmarks as plain dicts, for `imlca report`, docs and the CLI."""
from __future__ import annotations

from imlca.registries import BENCHMARKS


def describe_benchmarks() -> list[dict]:
    """One dict per registered benchmark, sorted by name. num_classes 0 and task_sizes [] (`imagefolder`) mean
    the classes come from the data and the split from `data.task_sizes`."""
    return [{"name": spec.name, "num_classes": spec.num_classes, "task_sizes": list(spec.task_sizes),
             "description": spec.description} for spec in sorted(BENCHMARKS.values(), key=lambda s: s.name)]
