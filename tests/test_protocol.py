"""End to end on tiny data: the whole protocol, its determinism, checkpoints and exact resume."""
import json

import pytest
import torch

from imlca.config import load_config
from imlca.core.metrics import average_incremental_accuracy, forgetting
from imlca.engine.checkpoint import latest_checkpoint, load_checkpoint
from imlca.engine.protocol import run_protocol
from imlca.errors import CheckpointError

from conftest import TINY, tiny_family_overrides, tiny_overrides


@pytest.fixture(scope="module")
def reference(tiny_run):
    """One uninterrupted tiny run (3 tasks × 2 classes): the session's (tests/conftest.py)."""
    return tiny_run


def test_protocol_numbers(reference):
    acc = reference.acc
    assert reference.methods == ["im_lca", "im", "im_ca"]
    for method, rows in acc.items():
        assert [len(r) for r in rows] == [1, 2, 3]
        assert all(0 <= v <= 100 and (v * 40) % 1 == 0 for r in rows for v in r)  # 40 test images per task
        s = reference.summary[method]
        assert s["avg_acc"] == pytest.approx(average_incremental_accuracy(rows))
        assert s["last_acc"] == pytest.approx(sum(rows[2]) / 3)
        assert s["forgetting"] == pytest.approx(forgetting(rows))
    # same trained head at task 0 for every method: alignment only starts at task 1
    assert acc["im"][0] == acc["im_ca"][0] == acc["im_lca"][0]
    assert acc["im"][0][0] >= 70  # the first task is learnt (chance is 50)
    # aligning every head on the merged backbone beats keeping the stale heads (IM)
    assert reference.summary["im_lca"]["avg_acc"] > reference.summary["im"]["avg_acc"] + 5
    assert reference.summary["im_ca"]["last_acc"] > reference.summary["im"]["last_acc"]
    last = reference.reports[-1]
    assert last["avg_acc"] == reference.summary["im_lca"]["avg_acc"]
    assert last["im/acc_2"] == acc["im"][2][2]


def test_same_seed_same_numbers_other_seed_other_order(reference):
    again = run_protocol(load_config(TINY, tiny_overrides()))
    assert again.acc == reference.acc
    for key, value in reference.merged.items():
        assert torch.equal(value, again.merged[key])


@pytest.mark.parametrize("stop_after", [0, 1])
def test_resume_after_each_task_is_bit_identical(family_run, tmp_path, stop_after):
    family, reference = family_run
    cfg = load_config(TINY, tiny_family_overrides(family))

    class Killed(Exception):
        pass

    def die(report):
        if report["task"] == stop_after:
            raise Killed

    with pytest.raises(Killed):
        run_protocol(cfg, on_task=die, checkpoint_dir=tmp_path)
    assert latest_checkpoint(tmp_path).name == f"task-{stop_after:03d}"
    resumed = run_protocol(cfg, checkpoint_dir=tmp_path)
    assert resumed.acc == reference.acc
    assert [r["avg_acc"] for r in resumed.reports] == [r["avg_acc"] for r in reference.reports]
    for key, value in reference.merged.items():
        assert torch.equal(value, resumed.merged[key]), key
    for method, heads in reference.heads.items():
        assert all(torch.equal(a, b) for a, b in zip(heads, resumed.heads[method]))


def test_checkpoint_corruption_and_mismatch_are_refused(tmp_path):
    cfg = load_config(TINY, tiny_overrides(**{"data.task_sizes": "[2, 4]"}))
    run_protocol(cfg, checkpoint_dir=tmp_path)
    folder = latest_checkpoint(tmp_path)
    tensors, meta = load_checkpoint(folder)
    assert meta["tasks_merged"] == 2 and json.loads((folder / "meta.json").read_text())["task"] == 1
    other = load_config(TINY, tiny_overrides(**{"data.task_sizes": "[2, 4]", "align.lam": 0.5}))
    with pytest.raises(CheckpointError, match="different experiment config"):
        run_protocol(other, checkpoint_dir=tmp_path)
    data = bytearray((folder / "state.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "state.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="fails its checksum"):
        run_protocol(cfg, checkpoint_dir=tmp_path)


def test_robustness_is_logged_with_the_run(tmp_path):
    """A CIFAR-100-C-style folder whose 'corrupted' images are the clean test images scores exactly the last
    accuracy; CIFAR-100-P-style sequences of repeated clean frames flip 0% of the time."""
    import numpy as np

    from imlca.data.synthetic import TEST_PER_CLASS, make_images

    test = make_images(TEST_PER_CLASS, seed=2)  # the synthetic benchmark's test set
    clean = test.images.permute(0, 2, 3, 1).numpy()  # [N, 16, 16, 3]
    c_dir, p_dir = tmp_path / "c", tmp_path / "p"
    c_dir.mkdir(), p_dir.mkdir()
    np.save(c_dir / "fog.npy", np.concatenate([clean] * 5))
    np.save(c_dir / "labels.npy", np.concatenate([test.labels] * 5))
    np.save(p_dir / "brightness.npy", np.stack([clean, clean, clean], axis=1))
    cfg = load_config(TINY, tiny_overrides(**{"data.task_sizes": "[2, 4]", "robustness.corruptions_dir": str(c_dir),
                                              "robustness.perturbations_dir": str(p_dir)}))
    result = run_protocol(cfg)
    last = result.reports[-1]
    for method in result.methods:
        # all 6 classes × 20 images: the task accuracies weighted by their 2 and 4 classes
        overall = sum(r * n for r, n in zip(result.acc[method][-1], (2, 4))) / 6
        assert last[f"{method}/c_mean"] == pytest.approx(overall, abs=1e-9)
        assert last[f"{method}/p_flip_rate"] == 0.0
        assert last[f"{method}/p_frame_acc"] == pytest.approx(last[f"{method}/c_mean"], abs=1e-9)
    assert "robust" not in str(result.reports[0])
