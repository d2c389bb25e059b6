"""`python -m imlca bench`: the arithmetic of every judged row, the verdict, the printed table, its bad-input errors.

Speed goals are judged by the benchmark itself, never here: timings on a shared 2-core machine are noise. What is
tested is what each row computes from given times, on hand-made values with exact results.
"""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from imlca.bench.bank_sampling import bank_figures, bytes_per_class, moments, moments_ok
from imlca.bench.end_to_end import (REPEATS, covered, end_to_end_figures, idle_fractions, pinned, shared_cores)
from imlca.bench.gpu import bench_gpu, mfu, peak_flops
from imlca.bench.lambda_sweep import lambda_figures
from imlca.bench.loader_speed import loader_figures
from imlca.bench.measure import Goal, Measurement, Result, Settings, per_round, rounds, verdict
from imlca.bench.merge_speed import merge_figures
from imlca.bench.remote_data import remote_figures
from imlca.bench.sweep_overhead import sweep_figures
from imlca.bench.table import format_result
from imlca.bench.worker_rows import worker_figures
from imlca.cli import main
from imlca.core.gaussian_bank import GaussianBank

AT_MOST, AT_LEAST = Goal("<=", 1.05, "x", "t"), Goal(">=", 5.0, "x", "t")


def test_rounds_alternates_candidates_and_drops_warmup():
    calls = []
    values = {"x": iter([9.0, 1.0, 4.0, 2.0]), "y": iter([7.0, 3.0, 3.0, 5.0])}

    def candidate(name):
        def run():
            calls.append(name)
            return {name: next(values[name])}
        return run

    # the warm-up round (9, 7) is dropped; the kept rounds in order
    samples = rounds([candidate("x"), candidate("y")], repeats=3, warmup=1)
    assert samples == {"x": [1.0, 4.0, 2.0], "y": [3.0, 3.0, 5.0]}
    assert calls == ["x", "y"] * 4
    assert per_round(samples, lambda t: t["y"] - t["x"]) == [2.0, -1.0, 3.0]
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        rounds([candidate("x")], repeats=0)


@pytest.mark.parametrize("goal, samples, checks, expected", [
    (AT_MOST, [1.00, 1.02, 1.05], {}, "met"),  # the bound itself meets the goal
    (AT_MOST, [1.06, 1.10, 1.20], {}, "missed"),
    (AT_MOST, [1.00, 1.04, 1.06], {}, "not resolved"),  # median 1.04 meets with margin 0.01; the spread reaches 1.06
    (AT_MOST, [1.00, 1.06, 1.07], {}, "not resolved"),  # median misses, but one repeat met it
    (AT_LEAST, [6.0, 7.0], {"bank_moments": True}, "met"),
    (AT_LEAST, [6.0, 7.0], {"bank_moments": False}, "missed"),  # wrong results miss whatever the times
    (AT_LEAST, [4.0, 5.0, 9.0], {}, "not resolved"),
    (AT_LEAST, [5.0], {}, "met"),
    (AT_LEAST, [], {}, None),
])
def test_verdict_of_the_repeats(goal, samples, checks, expected):
    assert verdict(goal, samples, checks) == expected


def test_result_verdict_is_none_when_skipped_or_crashed():
    assert Result("b", AT_LEAST, Measurement([6.0]), 0.0, error="RuntimeError: x").verdict is None
    assert Result("g", AT_LEAST, Measurement([], skipped="no CUDA device"), 0.0).verdict is None
    assert Result("b", AT_LEAST, Measurement([6.0, 4.0, 8.0]), 0.0).verdict == "not resolved"


def test_the_table_prints_median_spread_and_verdict():
    m = Measurement([1.0, 1.1, 1.04], checks={"same_accuracies": True})
    assert (m.ratio, m.spread) == (1.04, (1.0, 1.1))
    first = format_result(Result("end_to_end", AT_MOST, m, 0.0))[0]
    assert first.split()[:8] == ["end_to_end", "1.040x", "1.000x–1.100x", "(3)", "<=", "1.05x", "not", "resolved"]
    fraction = format_result(Result("task_overhead", Goal("<=", 0.01, "fraction", "t"),
                                    Measurement([0.002, 0.004, 0.003]), 0.0))[0]
    assert fraction.split()[:7] == ["task_overhead", "0.3%", "0.2%–0.4%", "(3)", "<=", "1%", "met"]


def test_lora_worker_figures():
    samples = {"bare": [2.0, 4.0, 1.0], "in_actor": [2.2, 4.0, 0.9], "actor_call": [2.4, 4.4, 1.2]}
    figures, ratios = worker_figures(samples)
    assert figures == pytest.approx([1.1, 1.0, 0.9])
    assert ratios == pytest.approx({"in_actor": 1.0, "actor_call": 1.2})


def test_merge_figures_hold_each_rounds_worst_case():
    samples = {"factors/where": [1.0, 2.0], "factors/ties": [1.2, 2.0], "factors/max_abs": [0.8, 1.0],
               "delta/where": [10.0, 10.0], "delta/ties": [13.0, 9.0], "delta/max_abs": [10.0, 12.0]}
    figures, ratios = merge_figures(samples)
    assert figures == pytest.approx([1.3, 1.2])  # round 0: delta/ties 13/10; round 1: delta/max_abs 12/10
    assert ratios == pytest.approx({"factors/ties": 1.1, "factors/max_abs": 0.65, "delta/ties": 1.1,
                                    "delta/max_abs": 1.1})


def test_bank_figures_are_speedups_per_class():
    # 8 classes on the bank, 2 on the reference: per class bank 0.1 / 0.01 s, reference 1.0 / 0.08 s
    samples = {"bank_first": [0.8, 0.4], "bank_cached": [0.08, 0.08], "mvn_first": [2.0, 2.0],
               "mvn_cached": [0.16, 0.32]}
    figures, ratios = bank_figures(samples, num_classes=8, num_reference=2)
    assert figures == pytest.approx([8.0, 16.0])  # round 0: min(10, 8); round 1: min(20, 16)
    assert ratios == pytest.approx({"first": 15.0, "cached": 12.0})
    assert bytes_per_class(2) == {"statistics": 48, "cholesky_factor": 32}


def test_loader_judges_the_same_augmentation_on_both_sides():
    samples = {"jpeg": [1.0, 2.0, 3.0], "cached_augment": [1.0, 0.5, 1.0], "cached_gather": [0.1, 0.1, 0.1]}
    figures, ratios = loader_figures(samples)
    assert figures == pytest.approx([1.0, 4.0, 3.0])  # jpeg / cached_augment, never over the gather alone
    assert ratios == pytest.approx({"cached_augment_vs_jpeg": 3.0, "cached_gather_vs_jpeg": 20.0})


def test_remote_data_judges_the_jpeg_path_over_the_decoded_copy_per_round():
    figures, ratios = remote_figures({"jpegs": [4.0, 6.0, 3.0], "decoded": [1.0, 2.0, 2.0]})
    assert figures == pytest.approx([4.0, 3.0, 1.5]) and ratios == pytest.approx({"jpegs_vs_decoded": 3.0})


def test_end_to_end_figures_pair_the_rounds():
    runs = {"platform": [{"total": 11.0}, {"total": 9.0}, {"total": 10.5}],
            "bare": [{"total": 10.0}, {"total": 10.0}, {"total": 10.0}]}
    assert end_to_end_figures(runs) == pytest.approx([1.1, 0.9, 1.05])
    assert REPEATS >= 3


def test_covered_is_the_union_inside_the_window():
    assert covered([], 0.0, 10.0) == 0.0
    assert covered([(2.0, 4.0), (3.0, 6.0), (8.0, 9.0)], 0.0, 10.0) == 5.0  # [2, 6] ∪ [8, 9]
    assert covered([(-5.0, 3.0), (9.0, 15.0)], 0.0, 10.0) == 4.0  # clipped to [0, 3] and [9, 10]
    assert covered([(1.0, 9.0), (2.0, 3.0), (0.0, 10.0)], 0.0, 10.0) == 10.0  # never more than the window
    assert covered([(11.0, 12.0)], 0.0, 10.0) == 0.0


def test_task_overhead_counts_overlapping_actors_once():
    # windows: task 0 [0, 10], task 1 [10, 20], task 2 [20, 30]. The worker trains task 1 from 9 to 15 (queued
    # behind task 0's evaluation, across the boundary) and task 2 from 17.5 to 25; the CentralActor records task 0
    # at 9.5-10 and merges task 1 at 15-16, overlapping nothing, and records task 1 at 17-18, beside the training
    run = {"stamps": [0.0, 10.0, 20.0, 30.0],
           "intervals": [(9.0, 15.0), (9.5, 10.0), (15.0, 16.0), (17.0, 18.0), (17.5, 25.0), (25.5, 29.0)]}
    # task 1: covered [10, 16] ∪ [17, 20] = 9 s of 10; task 2: [20, 25] ∪ [25.5, 29] = 8.5 s of 10
    whole, per_task = idle_fractions(run)
    assert per_task == pytest.approx([1 / 9, 1.5 / 8.5]) and whole == pytest.approx(2.5 / 17.5)
    # the sum of the calls' seconds inside task 1's window would be 6 + 1 + 1 + 2.5 = 10.5 s: more than its 10 s


def test_sweep_figures_are_each_warm_trial_beyond_the_in_process_run():
    assert sweep_figures([10.0, 12.0, 13.5, 16.0], [1.0, 1.5, 1.2]) == pytest.approx([0.8, 0.3, 1.3])


def test_lambda_sweep_reference_is_a_bare_run_plus_k_alignments():
    samples = {"lambda_sweep": [66.0, 60.0], "bare_run": [50.0, 45.0], "k_alignments": [5.0, 5.0]}
    assert lambda_figures(samples) == pytest.approx([1.2, 1.2])


def test_mfu_of_a_rate():
    assert mfu(5_000.0, 1e15) == pytest.approx(0.35)  # 5,000 img/s × 70 GFLOP / 1 PFLOP/s
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12 and peak_flops("NVIDIA GeForce GTX 1080") is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_pinned_puts_the_processes_it_starts_on_the_shared_cores():
    """`end_to_end`'s two sides share cores: what this process starts while pinned (the Ray cluster, the bare
    run) inherits the set; this process gets its own set back."""
    before = os.sched_getaffinity(0)
    cores = shared_cores(1)
    assert len(cores) == 1 and cores <= before
    probe = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    with pinned(cores):
        inside = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    assert json.loads(inside) == sorted(cores) and os.sched_getaffinity(0) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the line printed where CUDA is missing")
def test_gpu_is_skipped_with_a_clear_line_without_cuda():
    measurement = bench_gpu(Settings(quick=True))
    assert measurement.ratio is None and measurement.skipped.startswith("no CUDA device")
    lines = format_result(Result("gpu", Goal(">=", 0.4, "MFU", "MFU"), measurement, 0.0))
    assert lines[0].split()[:6] == ["gpu", "-", "-", ">=", "0.4", "MFU"] and "-" == lines[0].split()[6]
    assert lines[1].strip() == "skipped: no CUDA device (torch.cuda.is_available() is False)"


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


@pytest.mark.parametrize("argv, message", [
    (["--only", "nope"], "error: unknown bench row 'nope'; the rows: lora_worker, merge, bank, loader, "
                         "end_to_end, task_overhead, sweep, lambda_sweep, gpu, gpu_paths, memory, ease_eval, plan, remote_data"),
    (["--only", "merg"], "error: unknown bench row 'merg'; did you mean 'merge'? the rows: lora_worker, merge, bank, "
                         "loader, end_to_end, task_overhead, sweep, lambda_sweep, gpu, gpu_paths, memory, ease_eval, "
                         "plan, remote_data"),
    (["--only"], "error: --only needs a row name; the rows: lora_worker, merge, bank, loader, end_to_end, "
                 "task_overhead, sweep, lambda_sweep, gpu, gpu_paths, memory, ease_eval, plan, remote_data"),
    (["--only", "merge", "--json", "missing/r.json"], "error: --json missing/r.json: folder missing does not exist; "
                                                      "create it or choose another path"),
    (["--threads", "0"], "error: --threads must be >= 1 (got 0)"),
])
def test_bad_input_is_one_line_and_runs_nothing(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    assert err == message + "\n" and out == ""
