"""CIFAR-100-C / -P readers and evaluation on tiny .npy files, and on-the-fly corruptions.

The "model" reads a label code from pixel (0, 0) of channel 0, so accuracies are exact by construction.
"""
import sys

import numpy as np
import pytest
import skimage.util
import torch

from imlca.data.base import TensorImageSet
from imlca.data.corruptions import CORRUPTIONS, generate_corruptions, read_corruption, stack_images
from imlca.engine.robustness import (compares_to_first_frame, evaluate_corruptions, evaluate_generated_corruptions,
                                     evaluate_perturbations, flip_rate)
from imlca.errors import ConfigError, DataError


def transform(image: torch.Tensor) -> torch.Tensor:
    return image.float() / 255  # uint8 [3, H, W] → float [3, H, W], the code survives


def oracle(batch: torch.Tensor) -> torch.Tensor:
    return (batch[:, 0, 0, 0] * 255).round().long()  # reads back the code of each image


def constant(k: int):
    return lambda batch: torch.full((len(batch),), k, dtype=torch.long)


def encode(codes, size: int = 32) -> np.ndarray:
    """uint8 [*codes.shape, size, size, 3]: a fixed pattern with the code written into pixel (0, 0, channel 0)."""
    codes = np.asarray(codes)
    images = np.broadcast_to(np.arange(size * size * 3, dtype=np.uint8).reshape(size, size, 3),
                             (*codes.shape, size, size, 3)).copy()
    images[..., 0, 0, 0] = codes
    return images


LABELS = np.array([1, 1, 0, 2])  # N = 4 test images; class 1 has a share of 2/4


@pytest.fixture
def c_root(tmp_path):
    """gaussian_noise: every image coded right; fog: coded wrong (label + 1) at severities 1–2, right at 3–5."""
    np.save(tmp_path / "labels.npy", np.tile(LABELS, 5))
    np.save(tmp_path / "gaussian_noise.npy", encode(np.tile(LABELS, 5)))
    fog = np.concatenate([LABELS + 1, LABELS + 1, LABELS, LABELS, LABELS])
    np.save(tmp_path / "fog.npy", encode(fog))
    return tmp_path


def test_c_constant_predictor_scores_its_class_share(c_root):
    result = evaluate_corruptions(constant(1), c_root, transform, batch_size=3)
    assert result["per_severity"] == {name: {s: 50.0 for s in range(1, 6)} for name in ("gaussian_noise", "fog")}
    assert result["per_corruption"] == {"gaussian_noise": 50.0, "fog": 50.0}
    assert result["mean"] == 50.0
    assert result["missing"] == [name for name in CORRUPTIONS if name not in ("gaussian_noise", "fog")]


def test_c_oracle_and_mean_over_cells(c_root):
    result = evaluate_corruptions(oracle, c_root, transform, batch_size=3)
    assert result["per_severity"]["gaussian_noise"] == {s: 100.0 for s in range(1, 6)}
    assert result["per_severity"]["fog"] == {1: 0.0, 2: 0.0, 3: 100.0, 4: 100.0, 5: 100.0}
    # fog: (0 + 0 + 100·3) / 5 = 60; all ten cells: (100·5 + 300) / 10 = 80
    assert result["per_corruption"] == {"gaussian_noise": 100.0, "fog": 60.0}
    assert result["mean"] == 80.0


def test_c_limit_and_names(c_root):
    # first 2 images of each block have labels [1, 1]: the constant 1 is always right
    result = evaluate_corruptions(constant(1), c_root, transform, names=["fog"], severities=[2, 4], limit=2)
    assert result["per_severity"] == {"fog": {2: 100.0, 4: 100.0}}
    assert result["missing"] == []


def test_c_label_map_turns_class_ids_into_positions(tmp_path):
    positions = np.array([1, 0, 2])
    np.save(tmp_path / "labels.npy", np.tile(positions + 10, 5))  # class ids 10..12 on disk
    np.save(tmp_path / "contrast.npy", encode(np.tile(positions, 5)))  # the model predicts positions
    assert evaluate_corruptions(oracle, tmp_path, transform)["mean"] == 0.0
    assert evaluate_corruptions(oracle, tmp_path, transform, label_map=lambda ids: ids - 10)["mean"] == 100.0


def test_read_corruption_reshapes_severity_blocks(c_root):
    images, labels = read_corruption(c_root, "fog")
    assert images.shape == (5, 4, 32, 32, 3) and labels.shape == (5, 4)
    assert images[0, :, 0, 0, 0].tolist() == [2, 2, 1, 3] and images[4, :, 0, 0, 0].tolist() == [1, 1, 0, 2]


@pytest.mark.parametrize("array, match", [
    (np.zeros((7, 32, 32, 3), np.uint8), r"expected <corruption>\.npy uint8 \[5·N"),  # not 5 blocks
    (np.zeros((5, 32, 32), np.uint8), r"holds uint8 \(5, 32, 32\)"),  # no channel axis
    (np.zeros((5, 32, 32, 3), np.float32), r"holds float32"),
])
def test_c_malformed_images(tmp_path, array, match):
    np.save(tmp_path / "labels.npy", np.zeros(len(array), np.int64))
    np.save(tmp_path / "snow.npy", array)
    with pytest.raises(DataError, match=match) as err:
        evaluate_corruptions(constant(0), tmp_path, transform)
    assert str(tmp_path / "snow.npy") in str(err.value) and "\n" not in str(err.value)


def test_c_label_errors(tmp_path):
    np.save(tmp_path / "snow.npy", encode(np.zeros(10, np.int64)))
    with pytest.raises(DataError, match="labels.npy is missing"):
        evaluate_corruptions(constant(0), tmp_path, transform)
    np.save(tmp_path / "labels.npy", np.zeros(9, np.int64))  # 10 images, 9 labels
    with pytest.raises(DataError, match=r"expected 10 integer labels"):
        evaluate_corruptions(constant(0), tmp_path, transform)


def test_c_missing_empty_and_unreadable(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nowhere'} does not exist; expected <corruption>.npy"):
        evaluate_corruptions(constant(0), tmp_path / "nowhere", transform)
    with pytest.raises(DataError, match="holds none of gaussian_noise"):
        evaluate_corruptions(constant(0), tmp_path, transform)
    (tmp_path / "frost.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"cannot read .*frost\.npy \(ValueError\)"):
        evaluate_corruptions(constant(0), tmp_path, transform)


def test_c_bad_arguments(c_root):
    with pytest.raises(ConfigError, match="severities"):
        evaluate_corruptions(constant(0), c_root, transform, severities=[0, 1])
    with pytest.raises(ConfigError, match="limit"):
        evaluate_corruptions(constant(0), c_root, transform, limit=0)
    with pytest.raises(ValueError, match=r"predict must return \[B\]"):
        evaluate_corruptions(lambda batch: torch.zeros(len(batch), 5), c_root, transform)


# Three sequences of T = 5 frames, labels [2, 3, 0]; frame codes are the model's predictions.
SEQUENCES = np.array([[1, 2, 2, 2, 2], [3, 3, 3, 3, 3], [0, 1, 0, 1, 0]])
SEQ_LABELS = np.array([2, 3, 0])


def test_flip_rate_consecutive_and_first_frame():
    # consecutive pairs: 1/4, 0/4, 4/4 → (25 + 0 + 100) / 3; against frame 0: 4/4, 0/4, 2/4 → (100 + 0 + 50) / 3
    assert flip_rate(SEQUENCES, first_frame=False) == pytest.approx(125 / 3)
    assert flip_rate(SEQUENCES, first_frame=True) == pytest.approx(50.0)
    assert compares_to_first_frame("speckle_noise") and compares_to_first_frame("gaussian_noise_2")
    assert not compares_to_first_frame("rotate")


@pytest.fixture
def p_root(tmp_path):
    for name in ("motion_blur", "gaussian_noise"):
        np.save(tmp_path / f"{name}.npy", encode(SEQUENCES))
    return tmp_path


def test_p_oracle(p_root):
    result = evaluate_perturbations(oracle, p_root, transform, test_labels=SEQ_LABELS, batch_size=4)
    # right frames: 4 (the 2s) + 5 + 3 (the 0s) = 12 of 15
    assert result["frame_accuracy"] == {"gaussian_noise": 80.0, "motion_blur": 80.0}
    assert result["flip_rate"] == pytest.approx({"gaussian_noise": 50.0, "motion_blur": 125 / 3})
    assert result["mean_frame_accuracy"] == 80.0
    assert result["mean_flip_rate"] == pytest.approx((50 + 125 / 3) / 2)
    assert "shear" in result["missing"] and "motion_blur" not in result["missing"]


def test_p_constant_predictor(p_root):
    result = evaluate_perturbations(constant(3), p_root, transform, test_labels=SEQ_LABELS)
    assert result["frame_accuracy"] == pytest.approx({"gaussian_noise": 100 / 3, "motion_blur": 100 / 3})
    assert result["flip_rate"] == {"gaussian_noise": 0.0, "motion_blur": 0.0}


def test_p_labels_file_wins_and_limit(p_root):
    np.save(p_root / "labels.npy", np.array([3, 3, 3]))
    result = evaluate_perturbations(oracle, p_root, transform, test_labels=SEQ_LABELS, names=["motion_blur"])
    assert result["frame_accuracy"] == {"motion_blur": pytest.approx(100 / 3)}  # only sequence 1 is all 3s
    result = evaluate_perturbations(oracle, p_root, transform, names=["motion_blur"], limit=1)
    assert result["frame_accuracy"] == {"motion_blur": 0.0}  # sequence 0 against label 3
    assert result["flip_rate"] == {"motion_blur": 25.0}


def test_p_errors(p_root):
    with pytest.raises(DataError, match="labels.npy is missing and no test labels"):
        evaluate_perturbations(oracle, p_root, transform)
    with pytest.raises(DataError, match="has 3 sequences but 2 test labels"):
        evaluate_perturbations(oracle, p_root, transform, test_labels=SEQ_LABELS[:2])
    np.save(p_root / "tilt.npy", encode(SEQUENCES[:, :1]))  # T = 1: nothing to flip
    with pytest.raises(DataError, match=r"tilt\.npy holds uint8 \(3, 1, 32, 32, 3\); expected .*T≥2"):
        evaluate_perturbations(oracle, p_root, transform, test_labels=SEQ_LABELS, names=["tilt"])
    with pytest.raises(DataError, match="does not exist; expected <perturbation>.npy"):
        evaluate_perturbations(oracle, p_root / "nowhere", transform)


def test_generate_all_corruptions_shapes_and_seed():
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    first = generate_corruptions(images, severities=[1], seed=3)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's RNG is left as it was
    assert sorted(first) == sorted((name, 1) for name in CORRUPTIONS)
    assert all(out.shape == (2, 32, 32, 3) and out.dtype == np.uint8 for out in first.values())
    again = generate_corruptions(images, severities=[1], seed=3)
    assert all(np.array_equal(first[key], again[key]) for key in first)
    other = generate_corruptions(images, ["gaussian_noise"], [1], seed=4)
    assert not np.array_equal(other[("gaussian_noise", 1)], first[("gaussian_noise", 1)])
    alone = generate_corruptions(images[:1], ["impulse_noise"], [1], seed=3)  # independent of the other images
    assert np.array_equal(alone[("impulse_noise", 1)][0], first[("impulse_noise", 1)][0])
    assert "pkg_resources" not in sys.modules or sys.modules["pkg_resources"].__spec__ is not None  # no stand-in
    assert skimage.util.random_noise.__module__.startswith("skimage")  # patched for the library only
    twins = generate_corruptions(images[[0, 0]], ["shot_noise"], [1], seed=3)[("shot_noise", 1)]
    assert not np.array_equal(twins[0], twins[1])  # each image draws its own noise


def test_generate_upscales_small_grey_images():
    images = np.random.default_rng(1).integers(0, 256, (2, 28, 28), dtype=np.uint8)  # below the library's 32 px
    out = generate_corruptions(images, ["glass_blur", "zoom_blur", "frost", "pixelate"], [5], seed=0)
    assert all(v.shape == (2, 28, 28, 3) and v.dtype == np.uint8 for v in out.values())


def test_generate_rejects_unknown_names_and_severities():
    images = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="unknown corruption 'rain'"):
        generate_corruptions(images, ["rain"])
    with pytest.raises(ConfigError, match="severity 6"):
        generate_corruptions(images, ["fog"], [6])


def test_generated_evaluation_with_constant_predictor():
    images = encode(np.zeros(3, np.int64))
    result = evaluate_generated_corruptions(constant(1), images, np.array([0, 1, 1]), transform,
                                            names=["contrast", "brightness"], severities=[1, 5])
    # class 1 has a share of 2/3 whatever the corruption does to the pixels
    assert {n: sorted(cells) for n, cells in result["per_severity"].items()} == {"contrast": [1, 5],
                                                                                 "brightness": [1, 5]}
    assert [v for cells in result["per_severity"].values() for v in cells.values()] == pytest.approx([200 / 3] * 4)
    assert result["mean"] == pytest.approx(200 / 3) and result["missing"] == []
    with pytest.raises(DataError, match="3 images and 2 labels"):
        evaluate_generated_corruptions(constant(1), images, np.array([0, 1]), transform)


def test_stack_images_from_an_image_set():
    grey = torch.tensor([7, 200], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 28, 28).contiguous()
    stacked = stack_images(TensorImageSet(grey, np.array([0, 1])), [1, 0], size=32)
    assert stacked.shape == (2, 32, 32, 3) and stacked.dtype == np.uint8
    assert (stacked[0] == 200).all() and (stacked[1] == 7).all()  # a flat image stays flat under bicubic resizing
