"""`imlca plan`: the work counted from a sweep (grid sizes, alignments, shared trajectories, published image counts),
trials packed onto worker types (fractional GPUs, max_workers), seconds and prices from measured figures with exact
answers, every cluster config read, and the command's table, JSON and one-line refusals (no worker type fits; a
figure no probe measured)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from imlca.cli import main
from imlca.config.sweep import load_sweep
from imlca.errors import UserError
from imlca.planning.clusters import apply_prices, local_cluster, read_cluster
from imlca.planning.estimate import per_node, schedule, TrialCost
from imlca.planning.figures import Device, model_key
from imlca.planning.plan import make_plan
from imlca.planning.workload import TaskWork, task_counts, workload

from plan_inputs import GIB, ROOT, TINY, tiny_figures, write_sweep


def test_trials_are_the_grid_times_num_samples_and_each_task_is_counted(tmp_path):
    path = write_sweep(tmp_path, space={"merge.rule": {"grid": ["ties", "max_abs"]},
                                        "lora.rank": {"grid": [2, 4, 8]}}, num_samples=2)
    work = workload(load_sweep(path))
    assert len(work.trials) == 12
    trial = work.trials[0]
    # synthetic: 3 tasks × 2 classes, 40 training and 20 test images per class
    assert trial.tasks == [TaskWork(80, 40, 0, 2), TaskWork(80, 80, 0, 4), TaskWork(80, 120, 0, 6)]
    assert trial.counts_from == "data" and trial.train_images == 240
    assert trial.alignments == 2  # im_lca and im_ca align; im keeps its trained heads
    assert work.trajectories == 12 and not work.random_keys


def test_cached_trials_share_one_fine_tuning_per_trajectory(tmp_path):
    path = write_sweep(tmp_path, space={"seed": {"grid": [1, 2]}, "align.epochs": {"grid": [1, 2]}},
                       align_space={"align.lam": {"grid": [0.0, 0.1, 1.0]}})
    work = workload(load_sweep(path))
    assert len(work.trials) == 4
    assert len({t.trajectory for t in work.trials}) == 2  # align.* does not shape the trajectory
    # the file lists align.epochs before seed (safe_dump sorts), so seed varies fastest: each seed's first trial trains
    assert [t.trains for t in work.trials] == [True, True, False, False]
    assert work.trials[0].alignments == 2 * 3  # two aligned methods × three λ values
    cached = workload(load_sweep(path), {work.trials[0].trajectory})
    assert cached.trajectories == 1


def test_image_counts_come_from_the_registry_when_the_data_is_absent(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, set={"data.benchmark": "cub", "data.root": str(tmp_path / "none")}))
    cfg = workload(sweep).trials[0].cfg
    tasks, source = task_counts(cfg)
    assert source == "registry" and len(tasks) == 10
    # CUB as published: 9,430 training and 2,358 test images over 200 classes; 20 classes per task
    assert tasks[0] == TaskWork(943, 236, 0, 20) and tasks[-1] == TaskWork(943, 2358, 0, 200)
    capped = load_sweep(write_sweep(tmp_path, "c", set={"data.benchmark": "cub", "data.root": str(tmp_path),
                                                         "data.train_per_class": 30, "data.val_fraction": 0.2}))
    tasks, _ = task_counts(workload(capped).trials[0].cfg)
    assert tasks[0] == TaskWork(20 * 24, 236, 20 * 6, 20)


def test_trials_per_node_as_ray_places_them():
    paper = {"CPU": 7, "GPU": 1, "memory": 16 * GIB}
    assert per_node({"CPU": 96, "GPU": 8, "memory": 806 * GIB}, paper) == 8
    assert per_node({"CPU": 8, "GPU": 1, "memory": 22 * GIB}, paper) == 1
    assert per_node({"CPU": 4, "GPU": 1, "memory": 22 * GIB}, paper) == 0  # too few CPUs
    assert per_node({"CPU": 8, "GPU": 1}, {"CPU": 2, "GPU": 0.25}) == 4  # fractional GPUs: four share one
    assert per_node({"CPU": 8, "GPU": 1}, {"CPU": 1, "GPU": 0.3}) == 3


def test_trials_fill_the_first_free_slot_and_each_slot_starts_once():
    costs = [TrialCost(10.0, start_s=1.0), TrialCost(20.0, start_s=1.0), TrialCost(5.0, start_s=1.0)]
    assert schedule(costs, 2, 4.0) == [4 + 1 + 10 + 5, 4 + 1 + 20]
    assert schedule(costs, 1, 4.0) == [4 + 1 + 35]


def test_the_local_plan_in_seconds(tmp_path):
    work = workload(load_sweep(write_sweep(tmp_path, space={"merge.rule": {"grid": ["ties", "max_abs"]}},
                                           max_concurrent_trials=2)))
    figures = tiny_figures(tmp_path, concurrent=2)  # taken with two probes at once, as two trials run here
    plan = make_plan(work, local_cluster({"CPU": 2.0, "GPU": 0.0, "memory": 8 * GIB}, "cpu"), figures, "cpu")
    chosen = plan.chosen
    assert (chosen.per_node, chosen.parallel) == (2, 2)
    # per task: 4 epochs × 80 / 80 = 4 s training, 80 / 160 = 0.5 s statistics, test_≤t / 160 evaluation;
    # tasks 1, 2: 2 alignments of 4 and 6 classes, each C × 0.25 s drawing + 3 epochs × ceil(32C / 32) × 0.5 s,
    # and 0.5 s per class factorised: the 4 seen at task 1, the 2 new at task 2
    parts = chosen.costs[0].parts
    assert parts == {"training": 12.0, "statistics": 1.5, "evaluation": 240 / 160,
                     "alignment": 4 * 0.5 + 2 * (4 * 0.25 + 3 * 4 * 0.5) + 2 * 0.5 + 2 * (6 * 0.25 + 3 * 6 * 0.5)}
    trial_s = sum(parts.values())
    assert plan.sweep_fixed_s == 7.0
    assert chosen.wall_s == pytest.approx(7.0 + 4.0 + 2.0 + trial_s)  # sweep + slot imports + build + one trial


def cluster_yaml(tmp_path: Path, types: dict, max_workers: int = 10) -> Path:
    config = {"cluster_name": "t", "max_workers": max_workers, "idle_timeout_minutes": 0, "head_node_type": "head",
              "provider": {"type": "aws", "region": "us-west-2"},
              "available_node_types": {"head": {"resources": {"CPU": 8, "GPU": 0}, "node_config": {}}, **types}}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def gpu_type(cpus: int, gpus: int, max_workers: int, price: str, instance: str) -> dict:
    return {"resources": {"CPU": cpus, "GPU": gpus}, "max_workers": max_workers, "min_workers": 0,
            "labels": {"imlca.io/usd-per-hour": price}, "node_config": {"InstanceType": instance}}


def test_a_cluster_plan_packs_trials_onto_nodes_and_prices_them(tmp_path):
    figures = tiny_figures(tmp_path, threads=2)
    figures.put("models", model_key(workload(load_sweep(write_sweep(tmp_path, "figs"))).trials[0].cfg,
                                    Device("NVIDIA A10G", 2)),
                {"train_img_s": 80.0, "feature_img_s": 160.0, "build_s": 2.0, "dim": 32})
    sweep = write_sweep(tmp_path, space={"seed": {"grid": [1, 2, 3, 4, 5, 6]}}, max_concurrent_trials=8,
                        set={"resources.num_cpus": 2, "resources.num_gpus": 0.5})
    cluster = read_cluster(cluster_yaml(tmp_path, {
        "small": gpu_type(4, 1, 1, "1.0", "g5.xlarge"),  # 2 trials per node, one node at most
        "big": gpu_type(8, 1, 3, "3.0", "g5.2xlarge")}))  # 2 per node (GPU 0.5 each): three nodes
    plan = make_plan(workload(load_sweep(sweep)), cluster, figures, "cpu")
    small, big = (next(t for t in plan.types if t.worker.name == name) for name in ("small", "big"))
    assert (small.per_node, small.nodes, small.parallel) == (2, 1, 2)
    assert (big.per_node, big.nodes, big.parallel) == (2, 3, 6)
    trial_s = big.costs[0].seconds
    assert big.wall_s == pytest.approx(7.0 + 4.0 + 2.0 + trial_s)
    assert small.wall_s == pytest.approx(7.0 + 4.0 + 2.0 + 3 * trial_s)
    assert big.node_hours == pytest.approx(3 * (4.0 + 2.0 + trial_s) / 3600)
    assert big.gpu_hours == pytest.approx(big.node_hours) and big.price == pytest.approx(3.0 * big.node_hours)
    assert plan.chosen is min(plan.types, key=lambda t: t.price)
    assert any("6 trials could run at once but small runs 2" in w for w in plan.warnings)
    apply_prices(cluster, ["big=0.5"])
    assert next(t for t in cluster.types if t.name == "big").price == 0.5
    with pytest.raises(UserError, match="no worker type 'huge'"):
        apply_prices(cluster, ["huge=1"])


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_sweep_that_fits_no_worker_type_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMLCA_PLAN_PROBES", str(tmp_path / "probes.json"))
    sweep = write_sweep(tmp_path, set={"resources.num_cpus": 7, "resources.num_gpus": 1, "resources.memory_gb": 16})
    cluster = cluster_yaml(tmp_path, {"g": gpu_type(4, 1, 8, "1.0", "g5.xlarge")})
    code, out, err = run_cli(["plan", str(sweep), "--cluster", str(cluster)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: a trial needs CPU 7, GPU 1, memory 16.0 GiB and fits no "
                                                   "worker type of cluster.yaml (g: CPU 4, GPU 1 (max_workers 8))")


def test_a_plan_without_measured_figures_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMLCA_PLAN_PROBES", str(tmp_path / "probes.json"))
    code, out, err = run_cli(["plan", str(ROOT / "sweeps" / "paper" / "table1.yaml"), "--cluster",
                              str(ROOT / "cluster" / "aws.yaml")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: no measured figure for training and feature throughput of vit_base_patch16_224 "
                          "at 224 px, bf16, batch 64, on A10G (7 thread(s))")
    # the work it counted comes first: trials, tasks and epochs, images per epoch, fine-tunings
    lines = out.splitlines()
    assert re.fullmatch(r"sweep table1: \d+ trial\(s\), at most \d+ at once", lines[0]), out
    assert any(re.search(r"cifar100: 10 tasks, \d+ epoch\(s\); training images per task [\d/]+ \(50000 per "
                         r"epoch", line) for line in lines), out
    assert any(line.startswith("  fine-tunings: ") for line in lines), out


def test_the_plan_prints_a_table_and_json(tmp_path, capsys, monkeypatch):
    tiny_figures(tmp_path).save()
    monkeypatch.setenv("IMLCA_PLAN_PROBES", str(tmp_path / "probes.json"))
    sweep = write_sweep(tmp_path, space={"merge.rule": {"grid": ["ties", "max_abs"]}})
    cluster = cluster_yaml(tmp_path, {"cpu": {"resources": {"CPU": 2, "GPU": 0}, "max_workers": 2,
                                              "node_config": {"InstanceType": "m5.large"}}})
    code, out, _ = run_cli(["plan", str(sweep), "--cluster", str(cluster), "--price", "cpu=0.1"], capsys)
    assert code == 0 and "chosen: cpu:" in out and "$" in out
    code, out, _ = run_cli(["plan", str(sweep), "--cluster", str(cluster), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["trials"] == 2 and doc["chosen"] == "cpu" and doc["types"][0]["per_node"] == 2


def test_aws_prices_are_ray_node_labels():
    from ray._private.label_utils import validate_node_label_syntax

    config = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    for spec in config["available_node_types"].values():
        validate_node_label_syntax(spec.get("labels", {}))  # raises on a key or value Ray would refuse
    prices = {t.name: t.price for t in read_cluster(ROOT / "cluster" / "aws.yaml").types}
    assert prices == {"gpu_g5": 1.212, "gpu_g5_spot": None, "gpu_p4d": 32.7726}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"])
def test_every_cluster_config_reads_and_runs_a_paper_trial_per_gpu(name):
    paper = {"CPU": 7, "GPU": 1, "memory": 16 * GIB}
    cluster = read_cluster(ROOT / "cluster" / name)
    assert cluster.types and cluster.max_workers >= 1
    for worker in cluster.types:
        assert per_node(worker.resources, paper) == worker.resources["GPU"] >= 1, (name, worker)


def test_the_plan_sees_which_trajectories_the_cache_holds(tmp_path):
    from imlca.config import load_config
    from imlca.engine.trajectory import compute_trajectory
    from imlca.engine.trajectory_cache import TrajectoryCache, trajectory_fingerprint

    cache = TrajectoryCache(str(tmp_path / "trajectories"))
    assert cache.entries() == set()  # no folder yet
    cfg = load_config(TINY)
    cache.store(trajectory_fingerprint(cfg), compute_trajectory(cfg))
    (tmp_path / "trajectories" / "torn").mkdir()  # a folder without a manifest is no entry
    assert cache.entries() == {trajectory_fingerprint(cfg)}
