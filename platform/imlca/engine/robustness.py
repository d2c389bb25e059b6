"""Robustness of a trained model: CIFAR-100-C top-1, CIFAR-100-P frame accuracy and flip rate. Plain torch.

`predict` maps a transformed batch float32 [B, 3, S, S] to label positions int64 [B] (the model in eval mode,
argmax included); `transform` maps one image, a uint8 [3, H, W] tensor as `ImageSet.load` gives, to float32
[3, S, S]; `label_map` maps the dataset's class ids (numpy int64) to those label positions, identity by default
(a benchmark's `split.positions`). Accuracies and flip rates are percentages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from imlca.data.corruptions import (C_LAYOUT, CORRUPTIONS, P_LAYOUT, PERTURBATIONS, SEVERITIES,
                                    generate_corruptions, present, read_corruption, read_perturbation)
from imlca.core.metrics import flip_rate, top1  # noqa: F401  (flip_rate: part of this module's API)
from imlca.errors import ConfigError, DataError

if TYPE_CHECKING:
    from imlca.config import RobustnessConfig
    from imlca.data.base import ImageSet

Predict = Callable[[torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor], torch.Tensor]
LabelMap = Callable[[np.ndarray], np.ndarray]


def _identity(labels: np.ndarray) -> np.ndarray:
    return labels


@torch.no_grad()
def predict_images(predict: Predict, images: np.ndarray, transform: Transform, batch_size: int = 256) -> np.ndarray:
    """Predictions int64 [N] for images uint8 [N, H, W, 3]; a memory map is read one batch at a time."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.array(images[start:start + batch_size])).permute(0, 3, 1, 2)  # [B, 3, H, W]
        predictions = predict(torch.stack([transform(image) for image in chunk]))
        if tuple(predictions.shape) != (len(chunk),):
            raise ValueError(f"predict must return [B] label positions, got {tuple(predictions.shape)} "
                             f"for B={len(chunk)}")
        out.append(predictions.cpu().numpy().astype(np.int64))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def compares_to_first_frame(perturbation: str) -> bool:
    """Hendrycks' rule (`'noise' in name`, so also `gaussian_noise_2`/`_3`): noise sequences are not
    temporally related, so each frame is compared with the first instead of with the previous one."""
    return "noise" in perturbation


def _check_severities(severities: Sequence[int]) -> None:
    if any(s not in SEVERITIES for s in severities):
        raise ConfigError("severities", f"{list(severities)} has a value outside 1..5; choose from 1 to 5")


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError("limit", f"{limit} is below 1; give a positive number of images or none for all")


def _c_summary(per_severity: dict[str, dict[int, float]], missing: list[str]) -> dict:
    # "mean" is over all (corruption, severity) cells evaluated
    cells = [acc for by_severity in per_severity.values() for acc in by_severity.values()]
    return {"per_severity": per_severity,
            "per_corruption": {name: float(np.mean(list(s.values()))) for name, s in per_severity.items()},
            "mean": float(np.mean(cells)), "missing": missing}


def evaluate_corruptions(predict: Predict, root: str | Path, transform: Transform, *,
                         names: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                         label_map: LabelMap = _identity, batch_size: int = 256, limit: int | None = None) -> dict:
    """CIFAR-100-C top-1 of every `<name>.npy` present under `root`, on the first `limit` images of each block.

    → {"per_severity": {name: {severity: top-1}}, "per_corruption": {name: mean over severities},
       "mean": mean over all cells, "missing": names without a file}.
    """
    _check_severities(severities)
    _check_limit(limit)
    available = present(root, names, C_LAYOUT)
    if not available:
        raise DataError(f"{root} holds none of {', '.join(names)}; expected {C_LAYOUT}")
    per_severity = {}
    for name in available:
        images, labels = read_corruption(root, name)  # [5, N, H, W, 3], [5, N]
        per_severity[name] = {
            s: top1(predict_images(predict, images[s - 1, :limit], transform, batch_size),
                    np.asarray(label_map(labels[s - 1, :limit])))
            for s in severities}
    return _c_summary(per_severity, [name for name in names if name not in available])


def evaluate_generated_corruptions(predict: Predict, images: np.ndarray, labels: np.ndarray, transform: Transform,
                                   *, names: Sequence[str] = CORRUPTIONS, severities: Sequence[int] = SEVERITIES,
                                   seed: int = 0, label_map: LabelMap = _identity, batch_size: int = 256) -> dict:
    """As `evaluate_corruptions`, on `images` uint8 [N, H, W(, 3)] with class ids `labels` [N], corrupted on the
    fly (see `imlca.data.corruptions.generate_corruptions`: ImageNet-C parameters, not CIFAR-100-C's)."""
    _check_severities(severities)
    if len(images) != len(labels) or not len(images):
        raise DataError(f"{len(images)} images and {len(labels)} labels given; pass one label per image, "
                        "at least one image")
    targets = np.asarray(label_map(np.asarray(labels, dtype=np.int64)))
    per_severity = {}
    for name in names:  # one corruption at a time bounds memory to N × len(severities) images
        corrupted = generate_corruptions(images, [name], severities, seed)
        per_severity[name] = {s: top1(predict_images(predict, corrupted[(name, s)], transform, batch_size), targets)
                              for s in severities}
    return _c_summary(per_severity, [])


def evaluate_perturbations(predict: Predict, root: str | Path, transform: Transform, *,
                           test_labels: np.ndarray | None = None, names: Sequence[str] = PERTURBATIONS,
                           label_map: LabelMap = _identity, batch_size: int = 256, limit: int | None = None) -> dict:
    """CIFAR-100-P frame accuracy and flip rate of every `<name>.npy` present, on the first `limit` sequences.

    → {"frame_accuracy": {name: top-1 over all frames of all sequences}, "flip_rate": {name: see `flip_rate`,
       first-frame pairs for noise}, "mean_frame_accuracy", "mean_flip_rate": means over the perturbations
       (sequence lengths may differ between perturbations; each counts once), "missing": names without a file}.
    """
    _check_limit(limit)
    available = present(root, names, P_LAYOUT)
    if not available:
        raise DataError(f"{root} holds none of {', '.join(names)}; expected {P_LAYOUT}")
    accuracy, flips = {}, {}
    for name in available:
        sequences, labels = read_perturbation(root, name, test_labels)  # [N, T, H, W, 3], [N]
        sequences, targets = sequences[:limit], np.asarray(label_map(labels[:limit]))
        n, t = sequences.shape[:2]
        frames = sequences.reshape(n * t, *sequences.shape[2:])  # sequence-major, so reshape back below
        predictions = predict_images(predict, frames, transform, batch_size).reshape(n, t)
        accuracy[name] = top1(predictions, targets[:, None])
        flips[name] = flip_rate(predictions, first_frame=compares_to_first_frame(name))
    return {"frame_accuracy": accuracy, "flip_rate": flips,
            "mean_frame_accuracy": float(np.mean(list(accuracy.values()))),
            "mean_flip_rate": float(np.mean(list(flips.values()))),
            "missing": [name for name in names if name not in available]}


def robustness_metrics(cfg: "RobustnessConfig", predictors: dict[str, Predict], transform: Transform,
                       test: "ImageSet", label_map: LabelMap, image_size: int, batch_size: int = 256) -> dict:
    """Flat metrics per method: `<method>/c_mean` (CIFAR-100-C folder, else generated), `<method>/p_frame_acc`,
    `<method>/p_flip_rate`; one pass of the evaluations above per method's predictor."""
    from imlca.data.corruptions import stack_images

    out: dict[str, float] = {}
    generated = None
    if cfg.generate and not cfg.corruptions_dir:
        keep = np.arange(len(test))[:cfg.limit]
        generated = stack_images(test, keep, image_size), np.asarray(test.labels)[keep]
    for method, predict in predictors.items():
        if cfg.corruptions_dir:
            c = evaluate_corruptions(predict, cfg.corruptions_dir, transform, severities=cfg.severities,
                                     label_map=label_map, batch_size=batch_size, limit=cfg.limit)
            out[f"{method}/c_mean"] = c["mean"]
        elif generated is not None:
            c = evaluate_generated_corruptions(predict, *generated, transform, severities=cfg.severities,
                                               label_map=label_map, batch_size=batch_size)
            out[f"{method}/c_mean"] = c["mean"]
        if cfg.perturbations_dir:
            p = evaluate_perturbations(predict, cfg.perturbations_dir, transform, test_labels=test.labels,
                                       label_map=label_map, batch_size=batch_size, limit=cfg.limit)
            out[f"{method}/p_frame_acc"], out[f"{method}/p_flip_rate"] = p["mean_frame_accuracy"], p["mean_flip_rate"]
    return out
