"""`python -m imlca bench`: the JSON it writes, its bookkeeping, its bad-input errors.

Speed goals are judged by the benchmark itself, never here: timings on a shared 2-core machine are noise.
"""
import json
import math
import subprocess
import sys

import pytest
import torch

from imlca.bench.gpu import bench_gpu, peak_flops
from imlca.bench.measure import Goal, Measurement, Result, Settings, rounds
from imlca.bench.bank_sampling import moments, moments_ok
from imlca.bench.table import format_result
from imlca.cli import main
from imlca.core.gaussian_bank import GaussianBank

from conftest import REPO


def run_bench(*args: str, tmp_path) -> dict:
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "imlca", "bench", "--quick", *args, "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["settings"] == {"quick": True, "threads": 1}
    assert [r["name"] for r in doc["results"]] == [a for a in args if a != "--only"]
    row = doc["results"][0]
    assert row["name"] in done.stdout and f"{row['ratio']:.3f}x" in done.stdout  # printed as it finished
    assert row["error"] is None and row["skipped"] is None
    for value in [row["ratio"], row["wall_s"], *row["timings_s"].values(), *row["ratios"].values()]:
        assert isinstance(value, float) and math.isfinite(value) and value > 0
    return row


def test_quick_merge_reports_every_rule_and_space(tmp_path):
    row = run_bench("--only", "merge", tmp_path=tmp_path)
    assert row["goal"] == {"op": "<=", "target": 1.5, "unit": "x", "text": row["goal"]["text"]}
    cases = {"factors/ties", "factors/max_abs", "delta/ties", "delta/max_abs"}
    assert set(row["ratios"]) == cases
    assert set(row["timings_s"]) == cases | {"factors/where", "delta/where"}
    assert row["ratio"] == max(row["ratios"].values())  # the worst case is held to the goal
    for case in cases:
        space = case.split("/")[0]
        assert row["ratios"][case] == pytest.approx(row["timings_s"][case] / row["timings_s"][f"{space}/where"])
    assert row["passed"] is (row["ratio"] <= 1.5)  # consistent with the goal, whichever way it went
    # ViT-B r=64 qkv in float32, 2 layers in the quick setting: (64·768 + 2304·64)·4·2 and 2304·768·4·2 bytes
    assert row["details"]["bytes_per_adapter"] == {"factors": 1_572_864, "delta": 14_155_776}


def test_quick_bank_reports_speedups_and_moments(tmp_path):
    row = run_bench("--only", "bank", tmp_path=tmp_path)
    assert (row["goal"]["op"], row["goal"]["target"]) == (">=", 5.0)
    assert set(row["ratios"]) == {"first", "cached"} and row["ratio"] == min(row["ratios"].values())
    assert set(row["timings_s"]) == {"bank_first", "bank_cached", "mvn_first", "mvn_cached"}
    assert row["checks"] == {"bank_moments": True, "reference_moments": True}  # correctness, not speed
    for side in ("bank_moments", "reference_moments"):
        stats = row["details"][side]
        assert 0.8 <= stats["mean_z_rms"] <= 1.2 and abs(stats["var_ratio"] - 1) < 0.05
    assert row["passed"] is (row["ratio"] >= 5.0)


def test_rounds_alternates_candidates_and_drops_warmup():
    calls = []
    values = {"x": iter([9.0, 1.0, 4.0, 2.0]), "y": iter([7.0, 3.0, 3.0, 5.0])}

    def candidate(name):
        def run():
            calls.append(name)
            return {name: next(values[name])}
        return run

    # warm-up round (9, 7) dropped; median(1, 4, 2) = 2, median(3, 3, 5) = 3
    assert rounds([candidate("x"), candidate("y")], repeats=3, warmup=1) == {"x": 2.0, "y": 3.0}
    assert calls == ["x", "y"] * 4
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        rounds([candidate("x")], repeats=0)


def test_pass_needs_the_goal_and_every_check():
    at_most, at_least = Goal("<=", 1.5, "x", "t"), Goal(">=", 5.0, "x", "t")
    assert Result("m", at_most, Measurement(1.5), 0.0).passed is True  # the bound itself meets the goal
    assert Result("m", at_most, Measurement(1.51), 0.0).passed is False
    assert Result("b", at_least, Measurement(6.0, checks={"bank_moments": True}), 0.0).passed is True
    assert Result("b", at_least, Measurement(6.0, checks={"bank_moments": False}), 0.0).passed is False
    assert Result("g", at_least, Measurement(None, skipped="no CUDA device"), 0.0).passed is None
    assert Result("b", at_least, Measurement(6.0), 0.0, error="RuntimeError: x").passed is None


def test_moments_of_hand_made_draws():
    # one class in 2-d from 4 points (±1, 0), (0, ±2): μ = 0, Σ = diag(2/3, 8/3) (unbiased, ridge 0)
    bank = GaussianBank(2, ridge=0.0)
    bank.update(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]), torch.zeros(4, dtype=torch.long))
    # draws ±(1, 2): mean exactly μ, so z = 0; sample variances (2, 8) = 3 × the true ones
    assert moments(torch.tensor([[1.0, 2.0], [-1.0, -2.0]]), bank, [0]) == pytest.approx(
        {"mean_z_rms": 0.0, "mean_z_max": 0.0, "var_ratio": 3.0})
    # two equal draws (1, 2): z = 1/sqrt((2/3)/2) = 2/sqrt((8/3)/2) = √3 in both dimensions, variances 0
    far = moments(torch.tensor([[1.0, 2.0], [1.0, 2.0]]), bank, [0])
    assert far == pytest.approx({"mean_z_rms": math.sqrt(3), "mean_z_max": math.sqrt(3), "var_ratio": 0.0})
    assert not moments_ok(far) and not moments_ok({"mean_z_rms": 0.0, "mean_z_max": 0.0, "var_ratio": 1.0})
    assert moments_ok({"mean_z_rms": 1.0, "mean_z_max": 4.5, "var_ratio": 1.01})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the line printed where CUDA is missing")
def test_gpu_is_skipped_with_a_clear_line_without_cuda():
    measurement = bench_gpu(Settings(quick=True))
    assert measurement.ratio is None and measurement.skipped.startswith("no CUDA device")
    lines = format_result(Result("gpu", Goal(">=", 0.4, "MFU", "MFU"), measurement, 0.0))
    assert lines[0].split()[:5] == ["gpu", "-", ">=", "0.4", "MFU"] and "-" == lines[0].split()[5]
    assert lines[1].strip() == "skipped: no CUDA device (torch.cuda.is_available() is False)"
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA GeForce GTX 1080") is None


@pytest.mark.parametrize("argv, message", [
    (["--only", "nope"], "error: unknown benchmark 'nope'; choose from lora_worker, merge, bank, bank_bytes, "
                         "loader, end_to_end, task_overhead, sweep, lambda_sweep, gpu, "
                         "gpu_paths, plan"),
    (["--only", "merge", "--json", "missing/r.json"], "error: --json missing/r.json: folder missing does not exist; "
                                                      "create it or choose another path"),
    (["--threads", "0"], "error: --threads must be >= 1 (got 0)"),
])
def test_bad_input_is_one_line_and_runs_nothing(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    assert err == message + "\n" and out == ""


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


def test_the_actors_clock_what_each_task_computed(ray_cluster):
    """`task_overhead`'s input: per task, the seconds the TaskWorker and the MergeActor spent computing it, read
    from them after the run; never more than the task's wall time on the driver, and never nothing."""
    from imlca.bench.environment import TINY, experiment_tree
    from imlca.orchestration.run_timing import distributed_run

    run = distributed_run(experiment_tree(TINY, 1))
    assert len(run["busy"]) == len(run["tasks"]) == 3
    assert all(0 < busy <= wall for busy, wall in zip(run["busy"], run["tasks"]))
    assert run["busy"][0] < run["tasks"][0] - 1.0  # task 0's wall time also holds the actors' start-up (seconds)
