"""`imlca plan --probe`: measure, on this machine's device, the figures a sweep's plan needs.

- Training and feature throughput of each (backbone, image size, precision, batch) the sweep uses, at the torch
  threads its trials get (`resources.num_cpus`): a TaskRunner of the trial's own config trains two tasks on a few
  batches of its real data through its real loader (the first task warms up; the second is timed), or, when the
  data is absent here, on random tensors of the same shape. The backbone is always built with random weights
  (`pretrained: false`): throughput does not depend on weight values, and the probe never downloads.
- Alignment: `align_heads` on a Gaussian bank of the feature dimension, at the class counts the sweep reaches.
- Fixed costs, each a new Python process as the sweep starts them: the TaskWorker's imports, a cached trial's
  imports, and Ray + Tune start-up with one empty trial (`imlca.orchestration.plan_probe`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import torch

from imlca.config import ExperimentConfig
from imlca.planning.figures import Device, Figures, align_key, model_key
from imlca.planning.workload import Workload, align_shape
from imlca.registries import BENCHMARKS

WARMUP_BATCHES, TIMED_BATCHES = 2, 4  # training batches per probed task
ALIGN_POINTS = 6  # class counts measured between the sweep's smallest and largest (linear between them)
ALIGN_BATCHES = 64  # alignment batches timed at each of them (fewer varied 2x between class counts here)


def probe_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The trial's config with random weights, one epoch, and few enough images per class for a few batches."""
    first_task = (cfg.data.task_sizes or BENCHMARKS[cfg.data.benchmark].task_sizes or (2,))[0]
    per_class = max(2, math.ceil(TIMED_BATCHES * cfg.train.batch_size / first_task))
    return dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, pretrained=False, checkpoint=None),
        train=dataclasses.replace(cfg.train, epochs=1, device="cpu" if not torch.cuda.is_available() else "cuda"),
        data=dataclasses.replace(cfg.data, train_per_class=per_class, test_per_class=1, val_fraction=0.0))


def _timed_task(runner, task: int) -> tuple[float, float, int]:
    """(training seconds, statistics seconds, images) of TaskRunner.train(task): the epoch's end splits them."""
    marks = []
    start = time.perf_counter()
    runner.on_epoch = lambda *_: marks.append(time.perf_counter())
    runner.train(task, runner.theta0())
    end = time.perf_counter()
    split = runner.benchmark.split
    images = len(split.task_indices(runner.benchmark.train.labels, task))
    return marks[0] - start, end - marks[0], images


def probe_model(cfg: ExperimentConfig) -> dict:
    """train_img_s, feature_img_s, build_s (data + model), dim; `source` says which data fed it."""
    from imlca.engine.family import worker_class
    from imlca.errors import DataError

    small = probe_config(cfg)
    start = time.perf_counter()
    try:
        runner = worker_class(small)(small)
    except DataError:
        return _probe_tensors(small)
    build_s = time.perf_counter() - start
    _timed_task(runner, 0)  # warm-up: lazy initialisation, allocator growth
    train_s, stats_s, images = _timed_task(runner, 1)
    passes = 2 if cfg.align.family == "mos" else 1  # MOS: its statistics and its prototypes under adapter 0
    return {"train_img_s": images / train_s, "feature_img_s": passes * images / stats_s, "build_s": build_s,
            "dim": runner.model.dim, "trainable_params": trainable(runner.model),
            "backbone_bytes": weight_bytes(runner.theta0()), "source": "the trial's own data and loader"}


def trainable(model: torch.nn.Module) -> int:
    """Parameters a task trains (the new head aside): LoRA (+LayerNorm) for IM, the whole backbone for SLCA."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weight_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the weights that travel to the centre after a task (and that it holds)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _probe_tensors(cfg: ExperimentConfig) -> dict:
    from imlca.engine.loops import extract_features
    from imlca.engine.runner import resolve_device

    device = resolve_device(cfg.train.device)
    start = time.perf_counter()
    model, head, fit = _tensor_model(cfg, device)
    build_s = time.perf_counter() - start
    b, s = cfg.train.batch_size, cfg.data.image_size
    batch = (torch.rand(b, 3, s, s, device=device), torch.randint(0, 2, (b,), device=device))
    fit([batch] * WARMUP_BATCHES)
    seconds = []
    for steps in (lambda: fit([batch] * TIMED_BATCHES),
                  lambda: extract_features(model, [batch] * TIMED_BATCHES, device)):
        start = time.perf_counter()
        steps()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    images = b * TIMED_BATCHES
    weights = model.backbone.state_dict() if cfg.align.family == "slca" else model.adapter()
    return {"train_img_s": images / seconds[0], "feature_img_s": images / seconds[1], "build_s": build_s,
            "dim": model.dim, "trainable_params": trainable(model), "backbone_bytes": weight_bytes(weights),
            "source": "random tensors (the data is absent here)"}


def _tensor_model(cfg: ExperimentConfig, device: torch.device):
    """(model, a new 2-class head, fit(batches)) of the trial's family, without its data."""
    from imlca.engine.loops import run_epochs, train_task
    from imlca.models.heads import init_head
    from imlca.models.model import build_full_model, build_model

    one = dataclasses.replace(cfg.train, epochs=1)
    if cfg.align.family == "slca":
        from imlca.core.slca import affine_logits
        from imlca.engine.slca_runner import slow_learner

        model = build_full_model(cfg).to(device)
        weight = init_head(2, model.dim, torch.Generator().manual_seed(0))
        head = torch.nn.Parameter(torch.cat([weight, torch.zeros(2, 1)], dim=1).to(device))

        def fit(batches):
            optimizer, schedule = slow_learner(model.backbone, head, one, cfg.slca)
            run_epochs(model, head, batches, 0, one, device, optimizer, schedule, logits_of=affine_logits)
        return model, head, fit
    model = build_model(cfg).to(device)
    head = torch.nn.Parameter(init_head(2, model.dim, torch.Generator().manual_seed(0)).to(device))
    return model, head, lambda batches: train_task(model, head, batches, 0, cfg.train, device)


def probe_alignment(dim: int, classes: list[int], cfg: ExperimentConfig) -> dict:
    """At the family's samples per class (planning.workload.align_shape): `cholesky_s` (factorising one class's
    covariance, once per class and bank), `draw_s_per_class` (its samples from a factorised class) and
    `per_batch_s` at each class count in `classes` (one alignment step: logits, the family's loss, SGD). The first
    alignment of a process imports torch._dynamo (through torch.optim); a warm-up pays for it, as the
    CentralActor's start-up does."""
    from imlca.core.gaussian_bank import GaussianBank

    shape, gen, top = align_shape(cfg), torch.Generator().manual_seed(0), max(classes)
    bank = GaussianBank(dim, cfg.align.ridge)
    labels = torch.arange(top).repeat_interleave(4)
    bank.update(torch.randn(len(labels), dim, generator=gen, dtype=torch.float64) + labels[:, None], labels)
    _align_once(cfg, bank, 2, 2, gen)
    few = list(range(2, min(top, 6)))  # classes not factorised yet
    cholesky = _seconds(lambda: bank.sample(few, 1, gen)) / len(few)
    draw = _seconds(lambda: bank.sample(few, shape.samples_per_class, gen)) / len(few)
    bank.sample(list(range(top)), 1, gen)  # every class factorised: the steps below time the loop alone
    per_batch = {}
    for c in classes:
        n = shape.samples_per_class if cfg.align.family in ("slca", "mos") else \
            max(1, math.ceil(ALIGN_BATCHES * shape.batch_size / c))  # SLCA, MOS: c batches of its samples per class
        seconds = _seconds(lambda: _align_once(cfg, bank, c, n, gen))
        per_batch[str(c)] = max(0.0, seconds - c * draw * n / shape.samples_per_class) / \
            math.ceil(c * n / shape.batch_size)
    return {"samples_per_class": shape.samples_per_class, "cholesky_s": cholesky, "draw_s_per_class": draw,
            "per_batch_s": per_batch}


def _align_once(cfg: ExperimentConfig, bank, classes: int, n: int, gen: torch.Generator) -> None:
    """One epoch of the family's alignment of `classes` classes, `n` samples each."""
    dim = bank.dim
    if cfg.align.family == "slca":
        from imlca.core.slca import align_slca_heads

        s, t = cfg.slca, cfg.train
        align_slca_heads(torch.randn(classes, dim + 1, generator=gen) * 0.02, bank, [classes], [1.0] * classes, n,
                         1, s.ca_lr, t.momentum, t.weight_decay, s.logit_norm_temperature, gen)
        return
    if cfg.align.family == "mos":
        from imlca.core.mos import align_head, sample_bank

        m, t = cfg.mos, cfg.train
        draw = lambda: sample_bank(bank, list(range(classes)), n, gen, m.statistics == "variance")  # noqa: E731
        align_head(torch.randn(classes, dim + 1, generator=gen) * 0.02, draw, classes, n, 1, m.ca_lr, t.momentum,
                   t.weight_decay)
        return
    from imlca.core.lca import align_heads

    a = cfg.align
    align_heads(torch.randn(classes, dim, generator=gen) * 0.02, bank, list(range(classes)), a.lam, n, 1,
                a.batch_size, a.lr, a.momentum, a.weight_decay, gen)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _process_seconds(code: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *code], check=True, env=env, capture_output=True, timeout=600)
    return time.perf_counter() - start


def probe_fixed(cached: bool) -> dict:
    """Seconds of the processes a sweep starts: Ray + Tune with one empty trial (orchestration/plan_probe.py), a
    TaskWorker's imports, a cached trial's imports."""
    out = subprocess.run([sys.executable, "-m", "imlca.orchestration.plan_probe"], check=True, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    fixed = json.loads(out.stdout.strip().splitlines()[-1])
    fixed["worker_imports_s"] = _process_seconds(["-c", "import imlca.engine.runner, imlca.engine.state"])
    if cached:
        fixed["plain_trial_imports_s"] = _process_seconds(["-c", "import ray.tune, imlca.orchestration.tune_sweep"])
        fixed["cached_trial_imports_s"] = _process_seconds(["-c", "import ray.tune, imlca.orchestration.tune_cached"])
    return fixed


def class_points(counts: set[int]) -> list[int]:
    """At most ALIGN_POINTS class counts spread over the sweep's range (both ends included)."""
    ordered = sorted(counts)
    if len(ordered) <= ALIGN_POINTS:
        return ordered
    step = (len(ordered) - 1) / (ALIGN_POINTS - 1)
    return sorted({ordered[round(i * step)] for i in range(ALIGN_POINTS)})


def probe_trial(tree: dict, classes: list[int], threads: int) -> dict:
    """One trial's figures, measured in this process: {"model": ..., "align": ... or None}."""
    from imlca.config import from_dict

    torch.set_num_threads(threads)
    cfg = from_dict(ExperimentConfig, tree)
    model = probe_model(cfg)
    return {"model": model, "align": probe_alignment(model["dim"], classes, cfg) if classes else None}


def _mean(values: list):
    if isinstance(values[0], dict):
        return {k: _mean([v[k] for v in values]) for k in values[0]}
    return sum(values) / len(values) if isinstance(values[0], float) else values[0]


def probe_side_by_side(cfg: ExperimentConfig, classes: list[int], device: Device) -> dict:
    """`device.concurrent` probes at once, each a new process, as that many trials share this machine (its cores,
    memory bandwidth, and whatever else runs on it); their figures averaged."""
    from imlca.config import to_dict

    code = ("import json, sys\nfrom imlca.planning.probe import probe_trial\n"
            "print(json.dumps(probe_trial(*json.loads(sys.argv[1]))))")
    argument = json.dumps([to_dict(cfg), classes, device.threads])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    runs = [subprocess.Popen([sys.executable, "-c", code, argument], stdout=subprocess.PIPE, env=env, text=True)
            for _ in range(device.concurrent)]
    outputs = [run.communicate(timeout=1800)[0] for run in runs]
    if any(run.returncode for run in runs):
        raise RuntimeError(f"a probe process failed (exit codes {[run.returncode for run in runs]})")
    return _mean([json.loads(out.strip().splitlines()[-1]) for out in outputs])


def run_probe(work: Workload, device: Device, figures: Figures, say=print) -> None:
    """Measure every figure `work` needs on `device` that the cache lacks, and save them."""
    for trial in work.trials:
        key = model_key(trial.cfg, device)
        needed = sorted({t.classes for t in trial.tasks[1:]}) if trial.alignments else []
        model = figures.get("models", key)
        batch, family = align_shape(trial.cfg).batch_size, trial.cfg.align.family
        align = None if model is None else figures.get("align", align_key(model["dim"], batch, device, family))
        have = set(map(int, (align or {}).get("per_batch_s", {})))
        if model is not None and "feature_img_s" in model and (not needed or (
                have and min(have) <= needed[0] and max(have) >= needed[-1])):
            continue
        say(f"probe: training, features and alignment of {key}"
            + (f" ({device.concurrent} probes at once, as the sweep's trials)" if device.concurrent > 1 else ""))
        found = probe_side_by_side(trial.cfg, class_points(set(needed)), device)
        figures.put("models", key, found["model"])
        if found["align"] is not None:
            figures.put("align", align_key(found["model"]["dim"], batch, device, family), found["align"])
        figures.save()
    fixed = figures.get("fixed", "local")
    if fixed is None or (work.sweep.cfg.cached and "cached_trial_imports_s" not in fixed):
        say("probe: Ray and Tune start-up, process imports ...")
        figures.put("fixed", "local", probe_fixed(work.sweep.cfg.cached))
        figures.save()
