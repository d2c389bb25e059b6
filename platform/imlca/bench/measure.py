"""What a benchmark returns, the goal it is held to, its verdict, and round-robin timing.

Every benchmark measures its platform path and its reference in the same process run, alternating them round by
round, so that a burst of load from other processes hits both sides alike. Each round (repeat) gives one value of
the row's figure; the row reports their median and their spread (lowest to highest), and its verdict says whether
the spread settles the goal: `met` when every repeat meets it, `missed` when none does, `not resolved` when the
repeats fall on both sides of it (the spread is wider than the median's margin to the goal).
"""
from __future__ import annotations

import math
import operator
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Seconds = dict[str, float]
Samples = dict[str, list[float]]  # name → one value per kept round, in round order
OPERATORS = {"<=": operator.le, ">=": operator.ge}
MET, MISSED, NOT_RESOLVED = "met", "missed", "not resolved"


@dataclass(frozen=True)
class Settings:
    quick: bool = False  # smaller sizes, fewer repeats: seconds instead of minutes
    threads: int = 1  # torch threads of the in-process side = CPUs of the actor side
    gpu: bool = False  # `bench --gpu`: with --quick and no CUDA, gpu_paths runs as a CPU smoke test


@dataclass(frozen=True)
class Goal:
    op: str  # "<=": the measured figure may be at most `target`; ">=": at least
    target: float
    unit: str  # "x": time ratios and speed-ups; "MFU": fraction of peak FLOP/s; "s": seconds; "fraction": of a time
    text: str  # what is divided by what, as in DESIGN §6

    def met(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.target)

    def describe(self) -> str:
        return f"{self.op} {format_value(self.target, self.unit, goal=True)}"


def format_value(value: float, unit: str, goal: bool = False) -> str:
    """1.234x, 0.4 MFU / 41.3%, 0.52 s, 1% / 0.8% (fractions)."""
    if unit == "x":
        return f"{value:g}x" if goal else f"{value:.3f}x"
    if unit == "s":
        return f"{value:g} s" if goal else f"{value:.2f} s"
    if unit == "MFU" and goal:
        return f"{value:g} MFU"
    return f"{value:.0%}" if goal else f"{value:.1%}"


def verdict(goal: Goal, samples: list[float], checks: dict[str, bool]) -> str | None:
    """met / missed / not resolved for the repeats' values of a row's figure; None with no value to judge.

    A failed correctness check (e.g. different accuracies on the two sides) is a miss whatever the times say."""
    if not samples:
        return None
    hits = [goal.met(value) for value in samples]
    if not all(checks.values()) or not any(hits):
        return MISSED
    return MET if all(hits) else NOT_RESOLVED


@dataclass
class Measurement:
    samples: list[float]  # the figure held to the goal, one value per repeat; empty when skipped
    timings: Seconds = field(default_factory=dict)  # medians, seconds
    ratios: dict[str, float] = field(default_factory=dict)  # the figures behind the judged one, and others beside it
    checks: dict[str, bool] = field(default_factory=dict)  # correctness conditions of a pass (e.g. equal moments)
    details: dict[str, Any] = field(default_factory=dict)  # sizes, settings, absolute rates
    skipped: str | None = None  # why nothing was measured
    note: str = ""  # one line for the table: what was measured, at which size

    @property
    def ratio(self) -> float | None:
        """The figure held to the goal: the median of the repeats."""
        return statistics.median(self.samples) if self.samples else None

    @property
    def spread(self) -> tuple[float, float] | None:
        return (min(self.samples), max(self.samples)) if self.samples else None


@dataclass
class Result:
    name: str
    goal: Goal
    measurement: Measurement
    wall_s: float
    error: str | None = None  # "<Exception>: message" when the benchmark crashed

    @property
    def verdict(self) -> str | None:
        """None when there is nothing to judge (skipped, crashed, or no value)."""
        m = self.measurement
        return None if self.error or m.skipped else verdict(self.goal, m.samples, m.checks)

    def to_json(self) -> dict:
        m = self.measurement
        return {"name": self.name, "goal": {"op": self.goal.op, "target": self.goal.target, "unit": self.goal.unit,
                                            "text": self.goal.text},
                "ratio": m.ratio, "samples": m.samples, "spread": m.spread, "verdict": self.verdict,
                "timings_s": m.timings, "ratios": m.ratios, "checks": m.checks, "details": m.details, "note": m.note,
                "skipped": m.skipped, "error": self.error, "wall_s": self.wall_s}


def wall(name: str, fn: Callable[[], Any]) -> Callable[[], Seconds]:
    """A candidate for `rounds`: `fn` timed from outside, reported under `name`."""
    def run() -> Seconds:
        start = time.perf_counter()
        fn()
        return {name: time.perf_counter() - start}
    return run


def rounds(candidates: list[Callable[[], Seconds]], repeats: int, warmup: int = 1) -> Samples:
    """Run every candidate once per round, `warmup` + `repeats` rounds; each named time of the kept rounds.

    A candidate returns the seconds it measured, by name (one call may time several things, e.g. the work inside
    an actor and the whole call around it). Warm-up rounds (lazy initialisation, allocator growth) are dropped.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    samples: Samples = {}
    for index in range(warmup + repeats):
        for candidate in candidates:
            for name, seconds in candidate().items():
                if index >= warmup:
                    samples.setdefault(name, []).append(seconds)
    return samples


def medians(samples: Samples) -> Seconds:
    return {name: statistics.median(values) for name, values in samples.items()}


def per_round(samples: Samples, figure: Callable[[Seconds], float]) -> list[float]:
    """`figure` of each round's times: [figure({name: samples[name][i]}) for each round i]."""
    count = min(len(values) for values in samples.values())
    return [figure({name: values[i] for name, values in samples.items()}) for i in range(count)]


def divide(numerator: float, denominator: float) -> float:
    """numerator / denominator; inf when a timer read 0 (a ratio must never crash the table)."""
    return numerator / denominator if denominator > 0 else math.inf
