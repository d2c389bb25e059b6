"""The decoded-image cache (`data.pipeline: cached`): same evaluation pixels as the plain path, built once, rebuilt
when stale or corrupt, safe when two processes build it at once; a corrupt image is still refused with exit 2."""
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from imlca.config import DataConfig, load_config
from imlca.data import image_cache
from imlca.data.base import FileImageSet, TensorImageSet
from imlca.data.device_augment import eval_batch
from imlca.data.image_cache import open_cache
from imlca.data.transforms import build_transform

from conftest import TINY, tiny_overrides
from test_bad_input import make_imagefolder

SIZES = [(40, 30), (30, 52), (24, 24), (12, 20), (64, 33)]  # (width, height): larger and smaller than 24 px


def jpeg_set(folder, sizes=SIZES) -> FileImageSet:
    rng = np.random.RandomState(0)
    paths = []
    for k, (w, h) in enumerate(sizes):
        paths.append(folder / f"{k}.jpg")
        Image.fromarray(rng.randint(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], quality=90)
    return FileImageSet(paths, np.arange(len(sizes)) % 2)


def plain_eval(images, size: int, normalize: bool) -> torch.Tensor:
    tf = build_transform(DataConfig(benchmark="synthetic", image_size=size, normalize=normalize), False,
                         (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    return torch.stack([tf(images.load(i)) for i in range(len(images))])


@pytest.mark.parametrize("normalize", [False, True])
def test_evaluation_pixels_equal_the_plain_path_for_files(tmp_path, normalize):
    images = jpeg_set(tmp_path)
    decoded = open_cache(images, 24, tmp_path / "cache")
    # images stored with the shorter side cut to 24 px (never enlarged), as RGB
    assert [tuple(decoded.image(i).shape) for i in range(5)] == [(3, 24, 32), (3, 41, 24), (3, 24, 24),
                                                                (3, 20, 12), (3, 24, 46)]
    batch, sizes = decoded.batch(list(range(5)))
    cached = eval_batch(batch, sizes, 24, normalize, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    assert torch.equal(cached, plain_eval(images, 24, normalize))


def test_evaluation_pixels_equal_for_grey_tensor_images_upscaled(tmp_path):
    grey = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    images = TensorImageSet(grey, np.arange(6))
    decoded = open_cache(images, 64, tmp_path)
    batch, sizes = decoded.batch([5, 0, 3])
    assert batch.shape == (3, 3, 28, 28) and torch.equal(batch[1], grey[0].expand(3, -1, -1))
    cached = eval_batch(batch, sizes, 64, True, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    assert torch.equal(cached, plain_eval(images, 64, True)[[5, 0, 3]])


@pytest.mark.parametrize("interpolation, ratio", [("bicubic", 1.5), ("bilinear", 1.25)])
def test_cached_evaluation_follows_the_eval_resize_and_interpolation(tmp_path, monkeypatch, interpolation, ratio):
    """data.eval_resize_ratio and data.eval_interpolation act on the cached path as on the plain one: the same
    pixels for the test images and for the training images' statistics (the cache stores every image at the
    evaluation resize, downscaled with its interpolation; smaller ones are enlarged on the device)."""
    from imlca.engine.runner import TaskRunner

    for part in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "imgs" / part / cls).mkdir(parents=True)
            for path in map(Path, jpeg_set(tmp_path, [(40, 30), (30, 52), (20, 28), (64, 33)]).paths):
                path.rename(tmp_path / "imgs" / part / cls / path.name)
    monkeypatch.setenv("IMLCA_CACHE", str(tmp_path / "cache"))
    batches = {}
    for pipeline in ("pil", "cached"):
        runner = TaskRunner(load_config(TINY, tiny_overrides(**{
            "data.benchmark": "imagefolder", "data.root": str(tmp_path / "imgs"), "data.task_sizes": "[1, 1]",
            "data.image_size": 24, "data.eval_resize_ratio": ratio, "data.eval_interpolation": interpolation,
            "data.pipeline": pipeline})))
        batches[pipeline] = [next(iter(runner._loader(part, [0, 1], runner.test_tf)))[0] for part in ("test", "train")]
    assert batches["pil"][0].shape == (8, 3, 24, 24)
    assert all(torch.equal(a, b) for a, b in zip(batches["pil"], batches["cached"]))


def test_cache_is_reused_rebuilt_when_corrupt_and_keyed_by_the_files(tmp_path, monkeypatch):
    images, root = jpeg_set(tmp_path), tmp_path / "cache"
    first = open_cache(images, 24, root)
    stamp = os.stat(first.folder / "pixels.u8").st_mtime_ns
    assert open_cache(images, 24, root).folder == first.folder  # reused: not written again
    assert os.stat(first.folder / "pixels.u8").st_mtime_ns == stamp
    expected = first.image(2).clone()
    with open(first.folder / "pixels.u8", "r+b") as f:  # flip one stored byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(image_cache, "_VERIFIED", set())  # a new process checks the checksum again
    again = open_cache(images, 24, root)
    assert again.folder == first.folder and torch.equal(again.image(2), expected)  # rebuilt
    os.utime(images.paths[0], ns=(stamp, stamp + 10**9))  # a changed file: another fingerprint, another cache
    assert open_cache(images, 24, root).folder != first.folder
    assert open_cache(images, 16, root).folder != first.folder  # another size
    assert not [p for p in root.iterdir() if ".tmp-" in p.name]


def _build(args):
    images, root = args
    return str(open_cache(images, 24, root).folder)


def test_two_processes_building_at_once_share_one_cache(tmp_path):
    images = jpeg_set(tmp_path)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        folders = pool.map(_build, [(images, tmp_path / "cache")] * 2)
    assert folders[0] == folders[1]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [os.path.basename(folders[0]), os.path.basename(folders[0]) + ".lock"])
    assert len(open_cache(images, 24, tmp_path / "cache")) == 5


def test_truncated_jpeg_refused_before_training_with_one_line(tmp_path, monkeypatch, capsys):
    """A JPEG whose header reads but whose pixels do not: verify() passes it, the cache build refuses it."""
    from imlca.cli import main

    make_imagefolder(tmp_path / "imgs", corrupt=False)
    good = jpeg_set(tmp_path, [(64, 64)]).paths[0]
    data = open(good, "rb").read()
    (tmp_path / "imgs" / "train" / "a" / "2.jpg").write_bytes(data[:len(data) // 2])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMLCA_CACHE", str(tmp_path / "cache"))
    args = ["run", str(TINY), "--set", "data.benchmark=imagefolder", "--set", f"data.root={tmp_path / 'imgs'}",
            "--set", "data.task_sizes=[1, 1]", "--set", "data.pipeline=cached", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read image ") and "2.jpg" in lines[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # nothing half-built left behind


def test_loss_curve_does_not_depend_on_loader_workers(tmp_path, monkeypatch):
    """Only how batches are produced changes (worker processes, persistent workers): the same losses, bit for bit."""
    from imlca.engine.runner import TaskRunner

    monkeypatch.setenv("IMLCA_CACHE", str(tmp_path))
    losses = {}
    for workers in (0, 2):
        cfg = load_config(TINY, tiny_overrides(**{"data.pipeline": "cached", "data.num_workers": workers,
                                                  "train.epochs": 2}))
        runner = TaskRunner(cfg)
        losses[workers] = runner.train(1, runner.theta0()).losses
    assert losses[0] == losses[2] and len(losses[0]) == 2


def test_loader_batches_follow_the_view(tmp_path, monkeypatch):
    from imlca.engine.runner import TaskRunner

    monkeypatch.setenv("IMLCA_CACHE", str(tmp_path))
    runner = TaskRunner(load_config(TINY, tiny_overrides(**{"data.pipeline": "cached", "eval.batch_size": 7})))
    cached = list(runner._loader("test", [0, 1], runner.test_tf))
    plain = list(DataLoader(runner.benchmark.view("test", [0, 1], runner.test_tf), batch_size=7))
    assert len(cached) == len(plain) == 12  # 4 classes × 20 test images, in batches of 7
    for (a, ta), (b, tb) in zip(cached, plain):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    torch.manual_seed(0)
    train = runner._loader("train", [0], runner.train_tf, shuffle_seed=3)
    epochs = [torch.cat([t for _, t in train]) for _ in range(2)]
    assert sorted(epochs[0].tolist()) == [0] * 40 + [1] * 40 and not torch.equal(epochs[0], epochs[1])
