"""Seconds per trial from its work and the measured figures; trials packed onto each worker type.

A plain trial, per task t: `epochs × train_t / train_img_s` (training) + `train_t / feature_img_s` (statistics)
+ `(test_≤t + val_≤t) / feature_img_s` (evaluation) + for t ≥ 1 `alignments × align(classes_t)`, where
`align(C) = C × draw_s_per_class + epochs × ceil(C·n / batch) × per_batch(C)` (per_batch linear between the
probed class counts), plus `cholesky_s` for each class a bank factorises. A cached trial trains (without alignments) only when its trajectory is not in the cache and
no earlier trial of the sweep trains it, then aligns every variant. Each slot (a trial process that Tune reuses for
its next trial) pays once for its worker's imports and its data + model build; the sweep pays once for the
driver's imports, Ray, Tune's start-up and end. Not counted: a cloud node's boot and image pull.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from imlca.planning.figures import Device, Figures, align_key, key_family, model_key
from imlca.planning.workload import TrialWork, align_shape


class MissingFigures(Exception):
    """Figures the plan needs that no probe has measured (`what`: one description each)."""

    def __init__(self, what: list[str]):
        self.what = what
        super().__init__("; ".join(what))


def per_node(node: dict[str, float], trial: dict[str, float]) -> int:
    """How many trials Ray places on one node of this type (each resource, as Ray counts it)."""
    return min((math.floor(node.get(k, 0) / amount + 1e-9) for k, amount in trial.items() if amount), default=0)


def _interpolate(points: dict[str, float], x: int) -> float | None:
    xs = sorted(int(k) for k in points)
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    lo = max(k for k in xs if k <= x)
    hi = min(k for k in xs if k >= x)
    if lo == hi:
        return points[str(lo)]
    w = (x - lo) / (hi - lo)
    return (1 - w) * points[str(lo)] + w * points[str(hi)]


def align_seconds(figure: dict, classes: int, trial: TrialWork) -> float | None:
    """One alignment of `classes` classes whose covariances are factorised already."""
    a = align_shape(trial.cfg)
    per_batch = _interpolate(figure["per_batch_s"], classes)
    if per_batch is None:
        return None
    draw = a.draws * classes * figure["draw_s_per_class"] * a.samples_per_class / figure["samples_per_class"]
    return draw + a.epochs * math.ceil(classes * a.samples_per_class / a.batch_size) * per_batch


def factorised(trial: TrialWork, t: int) -> int:
    """Classes whose covariance is factorised at task t: all seen ones at the first alignment (t = 1), then the
    new ones; once per bank (a trial's align_space variants share one per align.ridge value)."""
    seen = trial.tasks[t].classes
    return (seen if t == 1 else seen - trial.tasks[t - 1].classes) * trial.banks


def model_figure(figures: Figures, trial: TrialWork, device: Device) -> dict | None:
    """The probe's figures for this trial's model on `device`. A GPU is matched by its name's fragment (e.g. A10G)
    and any thread count, preferring the trial's batch size (`bench --gpu` measures at its own)."""
    exact = figures.get("models", model_key(trial.cfg, device))
    if exact is not None or device.name == "cpu":
        return exact
    backbone, size, precision, batch = model_key(trial.cfg, device).split("|")[:4]
    family = trial.cfg.align.family
    found = [(k.split("|")[3] != batch, k) for k in figures.doc["models"]
             if k.split("|")[:3] == [backbone, size, precision] and device.name in k.split("|")[4]
             and key_family(k) == family]
    return figures.get("models", min(found)[1]) if found else None


def feature_passes(trial: TrialWork, t: int) -> tuple[int, int]:
    """(backbone passes over task t's training images for its statistics or prototypes, test + validation images
    passed through the backbone for the evaluation after t). One and the seen images, except EASE's: one pass per
    subspace (t + 1, +1 with the pre-trained one); kept test features (`ease.cache_features`) leave the new
    subspace over every seen image plus the older ones over task t's images; and MOS's: two (the statistics under
    the carried adapter, the prototypes under adapter 0) and one pass per snapshot over every seen image (its
    stored adapters drift, so nothing is kept)."""
    task = trial.tasks[t]
    seen = task.test + task.val
    if trial.cfg.align.family == "mos":
        return 2, (t + 1) * seen
    if trial.cfg.align.family != "ease":
        return 1, seen
    e = trial.cfg.ease
    older = t + int(e.pretrained_subspace)  # subspaces before task t's adapter
    if not e.cache_features:
        return older + 1, (older + 1) * seen
    own = seen - (trial.tasks[t - 1].test + trial.tasks[t - 1].val if t else 0)
    return older + 1, seen + older * own


@dataclass
class TrialCost:
    seconds: float
    parts: dict[str, float] = field(default_factory=dict)  # training, statistics, evaluation, alignment
    start_s: float = 0.0  # paid once per slot: worker imports, data + model build


def trial_cost(trial: TrialWork, figures: Figures, device: Device, cached: bool) -> TrialCost:
    model = model_figure(figures, trial, device)
    what = f"{trial.cfg.model.backbone} at {trial.cfg.data.image_size} px, {trial.cfg.train.precision}, batch " \
           f"{trial.cfg.train.batch_size}, on {device.name} ({device.threads} thread(s)" + \
           (f", {device.concurrent} trials at once)" if device.concurrent > 1 else ")")
    if model is None or "feature_img_s" not in model:
        raise MissingFigures([f"training and feature throughput of {what}"])
    align = figures.get("align", align_key(model["dim"], align_shape(trial.cfg).batch_size, device,
                                           trial.cfg.align.family))
    parts = dict.fromkeys(("training", "statistics", "evaluation", "alignment"), 0.0)
    trains = trial.trains or not cached
    for t, task in enumerate(trial.tasks):
        if trains:
            stats_passes, eval_images = feature_passes(trial, t)
            parts["training"] += trial.cfg.train.epochs * task.train / model["train_img_s"]
            parts["statistics"] += stats_passes * task.train / model["feature_img_s"]
            parts["evaluation"] += eval_images / model["feature_img_s"]
        if t >= 1 and trial.alignments:
            seconds = None if align is None else align_seconds(align, task.classes, trial)
            if seconds is None:
                raise MissingFigures([f"alignment of {task.classes} classes of {model['dim']}-d features "
                                      f"({device.slot()} thread(s))"])
            parts["alignment"] += trial.alignments * seconds + factorised(trial, t) * align["cholesky_s"]
    return TrialCost(sum(parts.values()), parts, model.get("build_s", 0.0) if trains else 0.0)


def schedule(costs: list[TrialCost], slots: int, slot_start_s: float) -> list[float]:
    """Trials in order onto `slots` (Tune starts the next trial on the first free one): each slot's end time."""
    ends = [0.0] * max(1, slots)
    started = [False] * len(ends)
    for cost in costs:
        i = min(range(len(ends)), key=ends.__getitem__)
        if not started[i]:
            ends[i] += slot_start_s + cost.start_s
            started[i] = True
        ends[i] += cost.seconds
    return ends


def fixed_seconds(figures: Figures, cached: bool) -> tuple[float, float]:
    """(the sweep's own start-up and end, a slot's imports) measured on this machine."""
    fixed = figures.get("fixed", "local")
    if fixed is None or (cached and "cached_trial_imports_s" not in fixed):
        raise MissingFigures(["Ray and Tune start-up and process imports on this machine"])
    sweep = sum(fixed[k] for k in ("imports_s", "ray_init_s", "first_trial_s", "fit_end_s", "shutdown_s"))
    slot = fixed["worker_imports_s"]
    if cached:  # a cached trial imports the model code into its own process instead of starting a TaskWorker
        slot = fixed["cached_trial_imports_s"] - fixed["plain_trial_imports_s"]
    return sweep, slot
