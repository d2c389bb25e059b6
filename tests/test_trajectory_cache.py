"""The trajectory cache on tiny data: hits replay bit-identically, trajectory keys miss, align keys hit, corrupt or
partial entries are detected by their checksum and recomputed."""
import os

import pytest
import torch

from imlca.config import load_config
from imlca.engine.protocol import run_protocol
from imlca.engine.trajectory import Replay, compute_trajectory, replay
from imlca.engine.trajectory_cache import DATA, MANIFEST, TrajectoryCache, obtain, trajectory_fingerprint

from conftest import TINY, tiny_overrides

# two tasks, one epoch each, a quarter of the training images held out for validation
BASE = {"data.task_sizes": "[2, 4]", "train.epochs": 1, "align.epochs": 1, "data.val_fraction": 0.25}


def config(**extra):
    return load_config(TINY, tiny_overrides(**{**BASE, **extra}))


class Counted:
    """compute_trajectory, counting its calls: a call is a fine-tuning of every task."""

    def __init__(self):
        self.calls = 0

    def __call__(self, cfg):
        self.calls += 1
        return compute_trajectory(cfg)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    cache, compute = TrajectoryCache(str(tmp_path_factory.mktemp("cache"))), Counted()
    trajectory, hit = obtain(config(), cache, compute)
    assert not hit and compute.calls == 1
    return cache, trajectory


def test_cached_and_uncached_runs_match_the_protocol_bit_for_bit(stored):
    cache, uncached = stored
    cfg = config(**{"align.lam": 0.5})  # an align key: same trajectory
    compute = Counted()
    cached, hit = obtain(cfg, cache, compute)
    assert hit and compute.calls == 0  # no training
    reference = run_protocol(cfg)
    for trajectory in (uncached, cached):
        result = replay(cfg, trajectory)
        assert result.acc == reference.acc
        assert all(torch.equal(v, result.merged[k]) for k, v in reference.merged.items())
        for method, heads in reference.heads.items():
            assert all(torch.equal(a, b) for a, b in zip(heads, result.heads[method]))
        assert [r["avg_acc"] for r in result.reports] == [r["avg_acc"] for r in reference.reports]
        # the protocol's own run scores the validation split too, the same numbers as the replay
        val = [{k: v for k, v in r.items() if "val_" in k} for r in reference.reports]
        assert val[-1] and [{k: v for k, v in r.items() if "val_" in k} for r in result.reports] == val
    last = result.reports[-1]
    # validation rows beside the test rows: 10 held-out images per class, 2 and 4 classes per task
    assert [last[f"im_lca/val_acc_{j}"] * n % 100 for j, n in ((0, 20), (1, 40))] == [0, 0]
    assert last["val_avg_acc"] == last["im_lca/val_avg_acc"] and "val_acc_1" in last
    assert {"align_ce", "align_spread"} <= set(last)


def test_replay_honours_the_authors_terms(stored):
    """align.entropy_weight and align.logit_norm_temperature reach the replayed alignment: the replay equals the
    protocol's run with them, bit for bit, and its IM+LCA heads differ from those without them."""
    _, trajectory = stored
    cfg = config(**{"align.entropy_weight": 0.5, "align.logit_norm_temperature": 0.2})
    reference, result, plain = run_protocol(cfg), replay(cfg, trajectory), replay(config(), trajectory)
    for method, heads in reference.heads.items():
        assert all(torch.equal(a, b) for a, b in zip(heads, result.heads[method]))
    assert not torch.equal(result.heads["im_lca"][0], plain.heads["im_lca"][0])
    assert all(torch.equal(a, b) for a, b in zip(result.heads["im_ca"], plain.heads["im_ca"]))


def test_a_grouped_trial_reads_one_bank_and_equals_its_variants_run_alone(stored):
    """The variants of a grouped trial (λ, entropy weight, temperature, lr, ridge) share the trajectory's statistics,
    one bank per ridge value, without a copy of them; each variant's accuracy matrices, losses and heads are those of
    the variant replayed alone (on a bank of its own, as every variant had before), bit for bit."""
    _, trajectory = stored
    variants = {"lam": {"align.lam": 2.0}, "entropy": {"align.entropy_weight": 0.5},
                "tau": {"align.logit_norm_temperature": 0.2}, "lr": {"align.lr": 0.02}, "ridge": {"align.ridge": 1e-3}}
    cfgs = {name: config(**keys) for name, keys in variants.items()}
    grouped = Replay(cfgs, trajectory)
    reports = [grouped.step(step) for step in trajectory.steps]
    assert sorted(grouped.banks) == sorted({1e-3, cfgs["lam"].align.ridge})
    assert all(grouped.states[name].bank is grouped.banks[cfg.align.ridge] for name, cfg in cfgs.items())
    bank, first = grouped.banks[1e-3], trajectory.steps[0].statistics["sumsq"]
    assert bank._sumsq[0].untyped_storage().data_ptr() == first.untyped_storage().data_ptr()  # read, not copied
    for name, cfg in cfgs.items():
        alone, state = replay(cfg, trajectory), grouped.states[name]
        assert state.acc == alone.acc
        assert repr([r[name] for r in reports]) == repr(alone.reports)  # repr: task 0's alignment losses are NaN
        for method, heads in alone.heads.items():
            assert all(torch.equal(a, b) for a, b in zip(heads, state.heads[method])), (name, method)
    assert len({repr(state.acc["im_lca"]) for state in grouped.states.values()}) > 1  # the variants do differ


@pytest.mark.parametrize("key, value", [("seed", 7), ("data.image_size", 20), ("data.val_fraction", 0.5),
                                        ("model.layer_norm", True), ("lora.rank", 2), ("train.lr", 0.03),
                                        ("merge.rule", "mean"), ("merge.alpha", 0.5)])
def test_a_trajectory_key_misses(stored, key, value):
    cache, _ = stored
    assert cache.load(trajectory_fingerprint(config(**{key: value}))) is None


@pytest.mark.parametrize("key, value", [("align.lam", 2.0), ("align.ca_lr", 0.01), ("align.method", "im_ca"),
                                        ("align.samples_per_class", 8), ("eval.batch_size", 7), ("name", "other"),
                                        ("tracking.experiment", "x"), ("resources.num_cpus", 2), ("data.root", "/x"),
                                        ("align.entropy_weight", 0.5), ("align.logit_norm_temperature", 0.2)])
def test_an_align_or_bookkeeping_key_hits(stored, key, value):
    cache, _ = stored
    assert cache.load(trajectory_fingerprint(config(**{key: value}))) is not None


def test_null_num_workers_is_resolved_for_the_trajectory_features():
    """data.num_workers: null (the trial's CPUs less one: one loader process here) drives the loader of a
    trajectory's features too, and the features are those of a loader in this process."""
    from imlca.engine.trajectory import TrajectoryStep

    features = {}
    for workers in ("0", "null"):
        step = TrajectoryStep(config(**{"data.num_workers": workers, "resources.num_cpus": 2}), None)
        features[workers] = step.features("test", 1, step.state.merged)
    assert all(torch.equal(a, b) for a, b in zip(features["0"], features["null"]))
    assert features["0"][0].shape == (120, 32)  # 6 classes × 20 test images, 32-d features


def _entry_file(cache, cfg, name):
    return cache.root + f"/{trajectory_fingerprint(cfg)}/{name}"


def test_corrupt_entry_is_recomputed_partial_entries_are_never_read(stored, tmp_path):
    cache_dir = tmp_path / "cache"
    cache, compute, cfg = TrajectoryCache(str(cache_dir)), Counted(), config()
    cache.store(trajectory_fingerprint(cfg), stored[1])
    data_path = _entry_file(cache, cfg, DATA)
    data = bytearray(open(data_path, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the tensors
    open(data_path, "wb").write(bytes(data))
    assert cache.load(trajectory_fingerprint(cfg)) is None
    recomputed, hit = obtain(cfg, cache, compute)
    assert not hit and compute.calls == 1
    assert replay(cfg, recomputed).acc == replay(cfg, stored[1]).acc
    assert cache.load(trajectory_fingerprint(cfg)) is not None  # the rewritten entry is whole again
    open(data_path, "wb").write(bytes(data[: len(data) // 2]))  # a data file cut short (crash mid-write)
    assert cache.load(trajectory_fingerprint(cfg)) is None
    cache.store(trajectory_fingerprint(cfg), stored[1])
    manifest = _entry_file(cache, cfg, MANIFEST)
    open(manifest, "w").write(open(manifest).read()[:40])  # a torn manifest
    assert cache.load(trajectory_fingerprint(cfg)) is None
    os.remove(manifest)  # data written, manifest never: the entry does not exist
    assert cache.load(trajectory_fingerprint(cfg)) is None
    assert not [p for p in cache_dir.rglob("*") if ".tmp-" in p.name]  # renames left no temporary files



@pytest.fixture
def s3_env(s3, monkeypatch):
    """The session's S3 server (tests/conftest.py `s3`) with a bucket of this test's; its dummy credentials and
    endpoint are set in this test's environment only (pyarrow reads AWS_* from there). Yields a boto3 client."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    client = s3.client()
    client.create_bucket(Bucket="imlca-cache")
    return client


def test_object_store_entries_round_trip_and_corruption_is_detected(stored, s3_env):
    cfg, trajectory = config(), stored[1]
    cache, fingerprint = TrajectoryCache("s3://imlca-cache/trajectories"), trajectory_fingerprint(config())
    assert cache.load(fingerprint) is None
    cache.store(fingerprint, trajectory)
    keys = {o["Key"] for o in s3_env.list_objects_v2(Bucket="imlca-cache")["Contents"]}
    assert {f"trajectories/{fingerprint}/{DATA}", f"trajectories/{fingerprint}/{MANIFEST}"} <= keys
    assert replay(cfg, cache.load(fingerprint)).acc == replay(cfg, trajectory).acc
    key = f"trajectories/{fingerprint}/{DATA}"
    data = bytearray(s3_env.get_object(Bucket="imlca-cache", Key=key)["Body"].read())
    data[100] ^= 0x01
    s3_env.put_object(Bucket="imlca-cache", Key=key, Body=bytes(data))
    assert cache.load(fingerprint) is None
    s3_env.delete_object(Bucket="imlca-cache", Key=f"trajectories/{fingerprint}/{MANIFEST}")
    assert cache.load(fingerprint) is None  # data without a manifest: never read
