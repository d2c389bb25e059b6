"""`python -m imlca bench` rows run for real: the JSON a `--quick` process writes for the merge and bank rows, the
`end_to_end` row's bare side, the actors' clock the `task_overhead` row reads, and the `ease_eval` row.

Speed goals are judged by the benchmark itself, never here: what is tested is what the rows report, not how fast.
"""
import json
import math
import statistics
import subprocess
import sys

import pytest
import torch

from imlca.bench.end_to_end import covered
from imlca.bench.measure import Goal, verdict

from conftest import REPO


@pytest.fixture(scope="module")
def quick_rows(tmp_path_factory) -> dict[str, dict]:
    """One `imlca bench --quick --only merge --only bank` process; its JSON rows by name, after the checks every
    row must pass (printed as it finished, finite positive timings and ratios)."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run([sys.executable, "-m", "imlca", "bench", "--quick", "--only", "merge", "--only", "bank",
                           "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["settings"] == {"quick": True, "threads": 1}
    assert [r["name"] for r in doc["results"]] == ["merge", "bank"]
    for row in doc["results"]:
        low, high = row["spread"]
        printed = f"{row['ratio']:.3f}x  {low:.3f}x–{high:.3f}x ({len(row['samples'])})"
        assert row["name"] in done.stdout and printed in done.stdout  # printed as it finished, with its spread
        assert row["error"] is None and row["skipped"] is None
        assert row["ratio"] == statistics.median(row["samples"]) and (low, high) == (min(row["samples"]),
                                                                                     max(row["samples"]))
        for value in [row["wall_s"], *row["samples"], *row["timings_s"].values(), *row["ratios"].values()]:
            assert isinstance(value, float) and math.isfinite(value) and value > 0
        assert row["verdict"] == verdict(Goal(**row["goal"]), row["samples"], row["checks"])
    return {row["name"]: row for row in doc["results"]}


def test_quick_merge_reports_every_rule_and_space(quick_rows):
    row = quick_rows["merge"]
    assert row["goal"] == {"op": "<=", "target": 1.5, "unit": "x", "text": row["goal"]["text"]}
    cases = {"factors/ties", "factors/max_abs", "delta/ties", "delta/max_abs"}
    assert set(row["ratios"]) == cases and len(row["samples"]) == row["details"]["repeats"] == 7
    assert set(row["timings_s"]) == cases | {"factors/where", "delta/where"}
    # ViT-B r=64 qkv in float32, 2 layers in the quick setting: (64·768 + 2304·64)·4·2 and 2304·768·4·2 bytes
    assert row["details"]["bytes_per_adapter"] == {"factors": 1_572_864, "delta": 14_155_776}


def test_quick_bank_reports_speedups_moments_and_bytes(quick_rows):
    row = quick_rows["bank"]
    assert (row["goal"]["op"], row["goal"]["target"]) == (">=", 5.0) and len(row["samples"]) == 3
    assert set(row["ratios"]) == {"first", "cached"}
    assert set(row["timings_s"]) == {"bank_first", "bank_cached", "mvn_first", "mvn_cached"}
    assert row["checks"] == {"bank_moments": True, "reference_moments": True}  # correctness, not speed
    for side in ("bank_moments", "reference_moments"):
        stats = row["details"][side]
        assert 0.8 <= stats["mean_z_rms"] <= 1.2 and abs(stats["var_ratio"] - 1) < 0.05
    assert row["details"]["bytes_per_class"] == {"statistics": 4_724_736, "cholesky_factor": 4_718_592}


def test_end_to_end_bare_side_is_the_in_process_run_in_a_new_process():
    """`end_to_end`'s reference: run_protocol in a new Python process (imports included), one thread, as the
    TaskWorker; same accuracy matrices as the run in this process, a time per task within the total."""
    from imlca.bench.end_to_end import bare_run
    from imlca.bench.environment import TINY, experiment_tree
    from imlca.config import ExperimentConfig, from_dict
    from imlca.engine.protocol import run_protocol

    tree = experiment_tree(TINY, 1)
    bare = bare_run(tree)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = run_protocol(from_dict(ExperimentConfig, tree))
    finally:
        torch.set_num_threads(threads)
    assert bare["acc"] == here.acc
    assert len(bare["tasks"]) == 3 and all(t > 0 for t in bare["tasks"]) and sum(bare["tasks"]) <= bare["total"]


def test_the_actors_clock_when_they_computed(ray_cluster):
    """`task_overhead`'s input: the intervals in which the TaskWorker and the CentralActor computed, on the clock of
    the driver's task stamps. Every task's window holds some; the next task's training, queued behind a task's
    evaluation, runs across the window's end (so a sum of the calls' seconds per task could exceed its window)."""
    from imlca.bench.environment import TINY, experiment_tree
    from imlca.orchestration.run_timing import distributed_run

    run = distributed_run(experiment_tree(TINY, 1))
    stamps, intervals = run["stamps"], run["intervals"]
    assert len(stamps) == 4 and run["tasks"] == pytest.approx([b - a for a, b in zip(stamps, stamps[1:])])
    assert all(stamps[0] < start <= end < stamps[-1] for start, end in intervals)
    assert all(covered(intervals, a, b) > 0 for a, b in zip(stamps, stamps[1:]))
    assert any(start < stamp < end for stamp in stamps[1:-1] for start, end in intervals)
    assert covered(intervals, stamps[0], stamps[1]) < run["tasks"][0] - 1.0  # task 0 also holds the actors' start


def test_the_ease_eval_row_compares_the_same_accuracies_both_ways():
    """`ease_eval` --quick: recomputed / cached is a real speed-up and both sides give the same accuracy rows."""
    from imlca.bench.ease_eval import bench_ease_eval
    from imlca.bench.measure import Settings

    m = bench_ease_eval(Settings(quick=True))
    assert m.checks == {"same_accuracies": True} and len(m.samples) == 2
    assert m.details["tasks"] == 10 and m.ratio > 1
