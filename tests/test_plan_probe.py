"""`imlca plan`'s figures: the probe cache (round trip, a torn file measured again), the probe on the tiny config,
`bench gpu` handing its figures to the plan, and the probe of Ray and Tune's start-up (slow)."""
from __future__ import annotations

import pytest
import torch

from imlca.config.sweep import load_sweep
from imlca.planning.figures import Device, Figures, model_key, record_gpu_training
from imlca.planning.workload import workload

from plan_inputs import ROOT, TINY, tiny_figures, write_sweep


def test_the_probe_cache_round_trips_and_bench_gpu_figures_serve_gpu_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("IMLCA_PLAN_PROBES", str(tmp_path / "cache" / "probes.json"))
    record_gpu_training("vit_base_patch16_224", 224, "bf16", 128, "NVIDIA A10G", 500.0, 1500.0, 768)
    figures = Figures()
    key = "vit_base_patch16_224|224|bf16|128|NVIDIA A10G|1"
    assert figures.get("models", key)["train_img_s"] == 500.0
    paper = workload(load_sweep(ROOT / "sweeps" / "paper" / "table1.yaml")).trials[0]
    from imlca.planning.estimate import model_figure

    assert model_figure(figures, paper, Device("A10G", 7))["feature_img_s"] == 1500.0  # batch 64 there: any batch
    assert model_figure(figures, paper, Device("A100", 7)) is None
    (tmp_path / "cache" / "probes.json").write_text("{not json")
    assert Figures().doc["models"] == {}  # a torn or foreign file is measured again, not trusted


def test_the_probe_measures_the_tiny_config_side_by_side(tmp_path):
    from imlca.planning.probe import run_probe

    figures = tiny_figures(tmp_path)  # keeps its fixed figures: the Ray part is tested apart (slow)
    work = workload(load_sweep(write_sweep(tmp_path)))
    run_probe(work, Device("cpu", 1, 2), figures, say=lambda line: None)  # two probe processes at once
    stored = Figures(tmp_path / "probes.json")
    model = stored.get("models", model_key(work.trials[0].cfg, Device("cpu", 1, 2)))
    assert model["dim"] == 32 and model["train_img_s"] > 0 and model["feature_img_s"] > 0
    assert model["source"] == "the trial's own data and loader"
    align = stored.get("align", "32|32|1x2")
    assert sorted(align["per_batch_s"]) == ["4", "6"]  # the class counts tasks 1, 2 reach
    assert align["cholesky_s"] > 0 and align["draw_s_per_class"] > 0


def test_bench_gpu_hands_its_figures_to_the_plan(tmp_path, monkeypatch):
    from imlca.bench.gpu import record_for_plan
    from imlca.config import load_config
    from imlca.models.model import build_model

    monkeypatch.setenv("IMLCA_PLAN_PROBES", str(tmp_path / "probes.json"))
    model = build_model(load_config(TINY))
    batch = (torch.rand(4, 3, 16, 16), torch.zeros(4, dtype=torch.int64))
    record_for_plan("vit_test_tiny", model, batch, 123.0, "fp32", torch.device("cpu"))
    entry = Figures().get("models", "vit_test_tiny|16|fp32|4|cpu|1")
    assert entry["train_img_s"] == 123.0 and entry["feature_img_s"] > 0 and entry["dim"] == 32


@pytest.mark.slow
def test_the_probe_times_ray_and_tune_start_up():
    from imlca.planning.probe import probe_fixed

    fixed = probe_fixed(cached=False)
    assert set(fixed) == {"imports_s", "ray_init_s", "first_trial_s", "fit_end_s", "shutdown_s", "worker_imports_s"}
    assert all(value >= 0 for value in fixed.values()) and fixed["ray_init_s"] > 0
