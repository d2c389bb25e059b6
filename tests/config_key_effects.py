"""What a config builds, for tests/test_config_keys.py: the files its rows point at (`Assets`), the observables a
row compares (the data split, the runner's set-up, its first batches, the model, one trained task, a replay of one
shared tiny trajectory, the robustness metrics, where a run is written and tracked, what Ray is asked for), and the
row type `Effect`. The method families' own observables and rows are in config_key_families.py."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from imlca.config import ExperimentConfig, from_dict, merge_trees, read_config_tree

from conftest import TINY


class Assets:
    """Files the rows point at (under `{tmp}`), and the one tiny trajectory that replays and robustness share."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        for folder, count in (("folder_a", 2), ("folder_b", 3)):  # ImageFolder trees of 6 classes, as synthetic
            make_imagefolder(tmp / folder, count)
        self._write_backbone()
        self._write_robustness_sets()

    def _write_backbone(self) -> None:
        from safetensors.torch import save_file

        from imlca.models.backbone import create_backbone

        state = create_backbone("vit_test_tiny", False, None, 16).state_dict()
        save_file({k: (v * 0.5).contiguous() for k, v in state.items()}, str(self.tmp / "backbone.safetensors"))

    def _write_robustness_sets(self) -> None:
        """CIFAR-100-C/-P-style files of the synthetic test images: severity s relabels them by a shift of s − 1
        (so each severity scores differently); the -P sequences repeat each clean image 3 times."""
        from imlca.data.synthetic import TEST_PER_CLASS, make_images

        test = make_images(TEST_PER_CLASS, seed=2)
        clean = test.images.permute(0, 2, 3, 1).numpy()  # [N, 16, 16, 3]
        (self.tmp / "c").mkdir(), (self.tmp / "p").mkdir()
        np.save(self.tmp / "c" / "fog.npy", np.concatenate([clean] * 5))
        np.save(self.tmp / "c" / "labels.npy", np.concatenate([(test.labels + s) % 6 for s in range(5)]))
        np.save(self.tmp / "p" / "brightness.npy", np.stack([clean] * 3, axis=1))

    @cached_property
    def trajectory(self):
        from imlca.engine.trajectory import compute_trajectory

        return compute_trajectory(tiny({}, self))


def make_imagefolder(root: Path, per_class: int) -> None:
    from PIL import Image

    for part in ("train", "test"):
        for cls in "abcdef":
            (root / part / cls).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / part / cls / f"{i}.png")


def fill(value: Any, assets: Assets) -> Any:
    return value.replace("{tmp}", str(assets.tmp)) if isinstance(value, str) else value


def tiny(changes: dict, assets: Assets) -> ExperimentConfig:
    tree = merge_trees(read_config_tree(TINY), {k: fill(v, assets) for k, v in changes.items()})
    return from_dict(ExperimentConfig, tree)


# --- observables: what a config builds, as plain values and tensors ------------------------------------------------

def split(cfg, assets):
    from imlca.data import load_benchmark

    b = load_benchmark(cfg.data, cfg.seed)
    return {"order": b.split.order.tolist(), "tasks": [b.split.task_range(t) for t in range(b.split.num_tasks)],
            "train": b.train.labels.tolist(), "test": b.test.labels.tolist(),
            "val": None if b.val is None else b.val.labels.tolist()}


def _loader_facts(loader) -> dict:
    inner = getattr(loader, "loader", loader)  # CachedLoader wraps a DataLoader of whole batches
    batch = inner.batch_size or inner.sampler.batch
    return {"kind": type(loader).__name__, "workers": inner.num_workers, "batch": batch}


def setup(cfg, assets):
    """The TaskRunner's device, loaders, θ0 keys, memory format, compilation and decoded-image cache folder."""
    from imlca.engine.runner import TaskRunner

    runner = TaskRunner(cfg)
    conv = runner.model.backbone.patch_embed.proj.weight
    cached = None if runner.cached is None else str(runner.cached.parts["train"].folder.parent)
    return {"device": runner.device.type, "theta0": sorted(runner.theta0()), "cache": cached,
            "train": _loader_facts(runner._loader("train", [0], runner.train_tf, shuffle_seed=0)),
            "test": _loader_facts(runner._loader("test", [0], runner.test_tf)),
            "channels_last": conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous(),
            "compiled": runner.model.backbone._compiled_call_impl is not None}


def batches(cfg, assets):
    """The first training batch of task 0 (augmented), the first test batch and the first validation batch."""
    from imlca.engine.runner import TaskRunner

    runner = TaskRunner(cfg)
    torch.manual_seed(0)
    out = {"train": next(iter(runner._loader("train", [0], runner.train_tf, shuffle_seed=0)))}
    parts = ["test"] + (["val"] if runner.benchmark.val is not None else [])
    return out | {part: next(iter(runner._loader(part, [0], runner.test_tf))) for part in parts}


def model(cfg, assets):
    """θ0, and the features of a fixed input once every LoRA B holds a fixed non-zero value."""
    from imlca.models.model import build_model

    net = build_model(cfg)
    theta0 = net.adapter()
    net.load_adapter({k: torch.full_like(v, 0.05) if "lora_B" in k else v for k, v in theta0.items()})
    x = torch.rand(2, 3, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return {"theta0": theta0, "features": net.features(x)}


def weights(cfg, assets):
    """The timm weights the backbone names (its pretrained_cfg tag): nothing is downloaded with pretrained false."""
    from imlca.models.model import build_model

    return build_model(cfg).backbone.pretrained_cfg["tag"]


def training(cfg, assets):
    """Task 0 trained from θ0: the epoch losses, the adapter, the head, the new classes' statistics."""
    from imlca.engine.runner import TaskRunner

    runner = TaskRunner(cfg)
    out = runner.train(0, runner.theta0())
    return {"losses": out.losses, "adapter": out.adapter, "head": out.head, "statistics": out.statistics}


def replayed(cfg, assets):
    """The run of `cfg` replayed from the shared tiny trajectory: merge and alignment only (no images)."""
    from imlca.engine.trajectory import replay

    result = replay(cfg, assets.trajectory)
    return {"merged": result.merged, "heads": result.heads, "reports": result.reports}


def robustness(cfg, assets):
    """The robustness metrics of the trajectory's final merged backbone and trained heads."""
    from imlca.engine.runner import TaskRunner

    steps = assets.trajectory.steps
    return TaskRunner(cfg).robustness(steps[-1].merged, {"im": [s.head for s in steps]})


def where(cfg, assets):
    """The run's output folder, without its time stamp (`<output_dir>/<name>-YYYYmmdd-HHMMSS`)."""
    from imlca.cli.run import default_folder

    parent, name = default_folder(cfg)
    return str(parent), name[:-len("-YYYYmmdd-HHMMSS")]


def tracked(cfg, assets):
    """The MLflow store, experiment and run name a tracked run lands in."""
    from mlflow import MlflowClient

    from imlca.tracking.runs import TrackedRun

    run = TrackedRun(cfg)
    run.finish(None)
    info = MlflowClient(run.tracker.uri).get_run(run.run_id).info
    return run.tracker.uri, MlflowClient(run.tracker.uri).get_experiment(info.experiment_id).name, info.run_name


def imported(cfg, assets):
    """Whether a new process that builds the config (as a Ray worker does) imports tests/plugin_example.py."""
    import json
    import subprocess
    import sys

    from imlca.config import to_dict

    code = ("import json, sys; from imlca.config import ExperimentConfig, from_dict; "
            "from_dict(ExperimentConfig, json.loads(sys.argv[1])); print('plugin_example' in sys.modules)")
    tests = Path(__file__).resolve().parent
    env = {"PYTHONPATH": f"{tests}:{tests.parent / 'platform'}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code, json.dumps(to_dict(cfg))], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    return done.stdout.strip()


def ray_request(cfg, assets):
    """What a TaskWorker (and a Tune trial's bundle) asks Ray for."""
    return cfg.resources.ray_resources()


@dataclass(frozen=True)
class Effect:
    value: Any  # the changed value ("{tmp}" is the assets folder)
    observe: Callable[[ExperimentConfig, Assets], Any]
    context: dict = field(default_factory=dict)  # set in both configs (the key's own entry: its baseline)
    refused: bool = False  # the changed config must be refused with one line (a UserError)
    slow: bool = False
