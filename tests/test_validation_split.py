"""The validation split: seeded, per class, carved from train; off by default (the train set is unchanged)."""
import numpy as np
import pytest

from imlca.config import load_config
from imlca.data import load_benchmark
from imlca.data.splits import validation_split
from imlca.errors import ConfigError

from conftest import TINY, tiny_overrides


def test_validation_split_per_class_seeded_disjoint():
    labels = np.array([0] * 10 + [1] * 4 + [2] * 2)
    train, val = validation_split(labels, 0.25, seed=7)
    # round(0.25 · n_c) per class, at least one, and at least one left to train on: 2 (class 0) + 1 + 1
    assert [int((labels[val] == c).sum()) for c in (0, 1, 2)] == [2, 1, 1]
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert np.array_equal(val, np.sort(val)) and np.array_equal(train, np.sort(train))
    again, other = validation_split(labels, 0.25, seed=7)[1], validation_split(labels, 0.25, seed=8)[1]
    assert np.array_equal(val, again) and not np.array_equal(val, other)


def test_benchmark_without_and_with_validation():
    cfg = load_config(TINY)
    plain = load_benchmark(cfg.data, cfg.seed)
    assert plain.val is None
    with pytest.raises(ValueError, match="val_fraction"):
        plain.view("val", [0], lambda x: x)
    cfg = load_config(TINY, tiny_overrides(**{"data.val_fraction": 0.25}))
    held = load_benchmark(cfg.data, cfg.seed)
    assert len(held.val) + len(held.train) == len(plain.train)
    assert len(held.test) == len(plain.test)  # test images are never touched
    counts = np.bincount(held.val.labels)
    assert (counts == round(0.25 * len(plain.train) / len(counts))).all()
    view = held.view("val", [0], lambda x: x)
    assert set(view.targets.tolist()) == {0, 1}  # class-order positions of task 0


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_val_fraction_out_of_range(value):
    with pytest.raises(ConfigError, match="data.val_fraction"):
        load_config(TINY, tiny_overrides(**{"data.val_fraction": value}))


def test_a_sweep_on_validation_accuracy_needs_a_validation_split(tmp_path):
    from imlca.config.sweep import load_sweep

    path = tmp_path / "sweep.yaml"
    path.write_text(f"base: {TINY}\nspace:\n  seed: {{grid: [1, 2]}}\nmetric: val_avg_acc\n")
    with pytest.raises(ConfigError, match="val_avg_acc needs a validation split: set data.val_fraction > 0"):
        load_sweep(path)
    # every run scores its validation split (not only the trajectory cache's replays)
    path.write_text(f"base: {TINY}\nset: {{data.val_fraction: 0.2}}\nspace:\n  seed: {{grid: [1, 2]}}\n"
                    "metric: val_avg_acc\n")
    assert load_sweep(path).cfg.metric == "val_avg_acc"
