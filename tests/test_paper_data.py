"""The paper's benchmarks read from tiny copies of their real on-disk formats, written into tmp_path."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torchvision.datasets import StanfordCars

from imlca.config import DataConfig
from imlca.data import load_benchmark
from imlca.registries import BENCHMARKS
from imlca.data.catalog import describe_benchmarks
from imlca.errors import ConfigError, DataError

SEEDS = (1993, 1994, 1995)
# DESIGN §2: name → (classes, task sizes)
PAPER_SPLITS = {
    "cifar100": (100, (10,) * 10), "imagenet_r": (200, (20,) * 10), "imagenet_a": (200, (20,) * 10),
    "cub": (200, (20,) * 10), "omnibenchmark": (300, (30,) * 10), "vtab": (50, (10,) * 5),
    "cars": (196, (16,) + (20,) * 9),
}
FOLDERS = {"imagenet_r": "imagenet-r", "imagenet_a": "imagenet-a", "cub": "cub", "omnibenchmark": "omnibenchmark",
           "vtab": "vtab"}
# np.random.RandomState(1993).permutation(K)[:6]; for K = 100 this is PyCIL's well-known CIFAR-100 order
ORDER_1993 = {100: [68, 56, 78, 8, 23, 84], 200: [168, 136, 51, 9, 183, 101], 300: [169, 221, 146, 296, 92, 229],
              50: [43, 41, 23, 14, 13, 40], 196: [59, 134, 162, 9, 42, 72]}


def identity(image):
    return image


def load(name: str, root, seed: int = 1993, **kwargs):
    return load_benchmark(DataConfig(benchmark=name, root=str(root), **kwargs), seed)


def check_split(bench, num_classes: int, sizes: tuple[int, ...], train_per_class: int, test_per_class: int):
    """Class count, task sizes, samples per task and the seeded class order for one seed."""
    assert bench.num_classes == num_classes and bench.split.task_sizes == sizes
    for t, size in enumerate(sizes):
        lo, hi = bench.split.task_range(t)
        train = bench.view("train", [t], identity)
        assert len(train) == size * train_per_class and len(bench.view("test", [t], identity)) == size * test_per_class
        assert sorted(set(bench.train.labels[train.indices].tolist())) == sorted(bench.split.order[lo:hi].tolist())


def check_orders(name: str, root, num_classes: int, **kwargs):
    orders = [load(name, root, seed, **kwargs).split.order for seed in SEEDS]
    for seed, order in zip(SEEDS, orders):
        np.testing.assert_array_equal(order, np.random.RandomState(seed).permutation(num_classes))
    assert orders[0][:6].tolist() == ORDER_1993[num_classes]
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])


# ---------------------------------------------------------------- writers of the real formats

def cifar_rows(labels: list[int], index_offset: int) -> np.ndarray:
    # row = R plane (class id), G plane (sample index), B plane (200), each 1024 bytes: torchvision's layout
    planes = [np.array(labels), np.arange(len(labels)) + index_offset, np.full(len(labels), 200)]
    return np.repeat(np.stack(planes, 1), 1024, axis=1).astype(np.uint8)


def write_cifar(root, train_per_class: int = 2, test_per_class: int = 1) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for part, per_class, offset in (("train", train_per_class, 0), ("test", test_per_class, 100)):
        labels = [c for c in range(100) for _ in range(per_class)]
        entry = {b"data": cifar_rows(labels, offset), b"fine_labels": labels, b"coarse_labels": [c // 5 for c in labels]}
        # the official files were pickled by Python 2's numpy, whose arrays name numpy.core (NumPy 2: numpy._core)
        legacy = pickle.dumps(entry, protocol=2).replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        (folder / part).write_bytes(legacy)
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"c%d" % c for c in range(100)]}, protocol=2))


def write_image(path, value: int = 128, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (4, 4), value if mode == "L" else (value, 0, 255 - value)).save(path)


def write_tree(base, classes: list[str], train_per_class: int = 1, test_per_class: int = 1, test_classes=None) -> None:
    for part, names, count in (("train", classes, train_per_class), ("test", test_classes or classes, test_per_class)):
        for i, cls in enumerate(names):
            for k in range(count):  # alternate PNG and upper-case JPEG: extensions match case-insensitively
                write_image(base / part / cls / (f"{k}.png" if (i + k) % 2 else f"{k}.JPG"), value=i % 256)


def write_cars(root, images: bool = True, num_classes: int = 196, shift: int = 0) -> None:
    base, n = root / "stanford_cars", 196
    # image k (file 0000{k+1}.jpg) has 1-based class (37·k mod 196) + 1: 37 is coprime with 196, so every class once
    classes = [(37 * k) % 196 + 1 + shift for k in range(n)]
    names = [f"{k + 1:05d}.jpg" for k in range(n)]
    for folder, mat in (("cars_train", base / "devkit" / "cars_train_annos.mat"),
                        ("cars_test", base / "cars_test_annos_withlabels.mat")):
        records = np.zeros(n, dtype=[(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")])
        records["class"], records["fname"] = classes, names
        for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"):
            records[f] = [1] * n
        mat.parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(mat), {"annotations": records})
        (base / folder).mkdir()
        for name in names[: n if images else n - 1]:
            write_image(base / folder / name)
    meta = np.array([f"Car model {c}" for c in range(num_classes)], dtype=object)
    scipy.io.savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": meta})


# ---------------------------------------------------------------- the registry

def test_split_table_matches_design():
    assert {name: (BENCHMARKS[name].num_classes, BENCHMARKS[name].task_sizes) for name in PAPER_SPLITS} == PAPER_SPLITS


def test_describe_benchmarks_lists_every_registered_benchmark():
    table = {row["name"]: row for row in describe_benchmarks()}
    assert set(table) == set(BENCHMARKS) and set(PAPER_SPLITS) | {"imagefolder"} <= set(table)
    assert table["cars"]["task_sizes"] == [16] + [20] * 9 and table["cars"]["num_classes"] == 196
    assert {k: table["imagefolder"][k] for k in ("num_classes", "task_sizes")} == {"num_classes": 0, "task_sizes": []}
    assert all(isinstance(row["description"], str) and row["description"] for row in table.values())


# ---------------------------------------------------------------- CIFAR-100

def test_cifar100_splits_orders_and_pixels(tmp_path):
    write_cifar(tmp_path)
    bench = load("cifar100", tmp_path)
    check_split(bench, 100, (10,) * 10, train_per_class=2, test_per_class=1)
    check_orders("cifar100", tmp_path, 100)
    # train sample 3 is the second image of class 1: planes R = 1, G = 3, B = 200, as uint8 [3, 32, 32]
    image = bench.train.load(3)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert image[:, 5, 7].tolist() == [1, 3, 200] and image[0].unique().tolist() == [1]
    # a view returns class-order positions: class 68 is position 0 for seed 1993
    view = bench.view("test", range(10), identity)
    image, target = view[int(np.flatnonzero(bench.test.labels[view.indices] == 68)[0])]
    assert target == 0 and image[0, 0, 0].item() == 68


def test_cifar100_root_falls_back_to_env(tmp_path, monkeypatch):
    write_cifar(tmp_path, train_per_class=1)
    monkeypatch.setenv("IMLCA_DATA", str(tmp_path))
    assert len(load_benchmark(DataConfig(benchmark="cifar100"), 1993).train) == 100


class _OpensAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("content", [
    b"not a pickle at all", pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2)[:-20],
    pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}, protocol=2),
    pickle.dumps({b"data": np.zeros((2, 3000), np.uint8), b"fine_labels": [0, 1]}, protocol=2),
    pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}, protocol=2),
    "code"], ids=["garbage", "truncated", "no_labels", "bad_shape", "label_100", "code"])
def test_cifar100_malformed_pickle_is_a_data_error(tmp_path, content):
    write_cifar(tmp_path, train_per_class=1)
    marker = tmp_path / "ran"
    content = pickle.dumps({b"data": _OpensAFile(str(marker))}) if content == "code" else content
    (tmp_path / "cifar-100-python" / "train").write_bytes(content)
    with pytest.raises(DataError, match="cifar-100-python/train") as err:
        load("cifar100", tmp_path)
    assert "\n" not in str(err.value) and not marker.exists()  # the refused global never ran


def test_cifar100_checks_paths_before_reading(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"corrupt")  # would fail if it were read first
    (tmp_path / "cifar-100-python" / "test").unlink()
    with pytest.raises(DataError, match=f"{tmp_path}/cifar-100-python/test not found; expected torchvision's"):
        load("cifar100", tmp_path)


# ---------------------------------------------------------------- ImageFolder trees

@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_paper_image_folders(tmp_path, name):
    num_classes, sizes = PAPER_SPLITS[name]
    write_tree(tmp_path / FOLDERS[name], [f"class{c:03d}" for c in range(num_classes)])
    (tmp_path / FOLDERS[name] / "train" / "class000" / "notes.txt").write_text("not an image")
    (tmp_path / FOLDERS[name] / "train" / "class000" / "._0.png").write_bytes(b"macOS resource fork")
    (tmp_path / FOLDERS[name] / "train" / ".ipynb_checkpoints").mkdir()
    check_split(load(name, tmp_path), num_classes, sizes, train_per_class=1, test_per_class=1)
    check_orders(name, tmp_path, num_classes)


def test_imagefolder_labels_files_and_rgb(tmp_path, monkeypatch):
    # sorted folder names give the class ids: "Bee" < "ant" < "cat" < "dog" < "zebra" (upper case sorts first)
    write_tree(tmp_path, ["zebra", "ant", "cat", "Bee", "dog"], train_per_class=2)
    write_image(tmp_path / "train" / "ant" / "sub" / "2.png")  # nested files count, as in ImageFolder
    write_image(tmp_path / "test" / "cat" / "grey.png", value=77, mode="L")
    bench = load("imagefolder", tmp_path, task_sizes=[2, 3])
    train = bench.train.images
    assert [p.removeprefix(f"{tmp_path}/train/") for p in train.paths[:5]] == \
        ["Bee/0.png", "Bee/1.JPG", "ant/0.png", "ant/1.JPG", "ant/sub/2.png"]
    assert train.labels.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    assert bench.num_classes == 5 and bench.split.task_sizes == (2, 3)
    orders = [load("imagefolder", tmp_path, seed, task_sizes=[2, 3]).split.order.tolist() for seed in SEEDS]
    assert orders == [[0, 2, 3, 4, 1], [1, 4, 0, 2, 3], [0, 1, 3, 2, 4]]  # RandomState(seed).permutation(5)
    grey = bench.test.images.load(bench.test.images.paths.index(str(tmp_path / "test" / "cat" / "grey.png")))
    assert grey.mode == "RGB" and grey.getpixel((1, 2)) == (77, 77, 77)


def test_imagefolder_needs_task_sizes(tmp_path):
    write_tree(tmp_path, ["a", "b"])
    with pytest.raises(ConfigError, match="data.task_sizes"):
        load("imagefolder", tmp_path)


def test_wrong_class_count(tmp_path):
    write_tree(tmp_path / "vtab", [f"c{c}" for c in range(49)])
    with pytest.raises(DataError, match="vtab: found 49 class folders .* expected 50"):
        load("vtab", tmp_path)


def test_train_test_class_mismatch(tmp_path):
    write_tree(tmp_path, ["a", "b", "c"], test_classes=["a", "b", "d"])
    with pytest.raises(DataError, match=r"only in train/: \['c'\], only in test/: \['d'\]"):
        load("imagefolder", tmp_path, task_sizes=[3])


def test_class_folder_without_images(tmp_path):
    write_tree(tmp_path, ["a", "b"])
    (tmp_path / "test" / "b" / "0.png").unlink()
    with pytest.raises(DataError, match=f"{tmp_path}/test/b holds no image files"):
        load("imagefolder", tmp_path, task_sizes=[2])


def test_unreadable_image_names_the_file(tmp_path):
    write_tree(tmp_path, ["a", "b"])
    (tmp_path / "train" / "a" / "0.JPG").write_bytes(b"truncated jpeg")
    bench = load("imagefolder", tmp_path, task_sizes=[2])  # the lists are built without opening any image
    with pytest.raises(DataError, match=f"cannot read image {tmp_path}/train/a/0.JPG"):
        bench.train.load(0)


# ---------------------------------------------------------------- Stanford Cars

def test_cars_matches_torchvision_and_splits(tmp_path):
    write_cars(tmp_path)
    bench = load("cars", tmp_path)
    for part in ("train", "test"):
        ours = bench.train.images if part == "train" else bench.test.images
        theirs = StanfordCars(str(tmp_path), split=part)._samples
        assert list(zip(ours.paths, ours.labels.tolist())) == [(p, int(c)) for p, c in theirs]
    # file 00001.jpg has class 1 (label 0), 00002.jpg class 38 (label 37), 00003.jpg class 75 (label 74)
    assert bench.train.labels[:3].tolist() == [0, 37, 74]
    check_split(bench, 196, (16,) + (20,) * 9, train_per_class=1, test_per_class=1)
    check_orders("cars", tmp_path, 196)
    assert bench.test.load(0).mode == "RGB"


@pytest.mark.parametrize("breakage, message", [
    (dict(images=False), r"1 images named in cars_train_annos.mat are missing from .*cars_train \(first: 00196.jpg\)"),
    (dict(num_classes=195), "cars_meta.mat lists 195 classes, expected 196"),
    (dict(shift=1), "has classes 2..197, expected 1..196"),
])
def test_cars_malformed_copy(tmp_path, breakage, message):
    write_cars(tmp_path, **breakage)
    with pytest.raises(DataError, match=message):
        load("cars", tmp_path)


def test_cars_corrupt_mat(tmp_path):
    write_cars(tmp_path)
    (tmp_path / "stanford_cars" / "cars_test_annos_withlabels.mat").write_bytes(b"garbage" * 30)
    with pytest.raises(DataError, match="cars_test_annos_withlabels.mat is not a readable .mat file"):
        load("cars", tmp_path)


# ---------------------------------------------------------------- missing roots and directories

@pytest.mark.parametrize("name", ["cifar100", "imagenet_r", "cars", "imagefolder"])
def test_missing_root(name, monkeypatch):
    monkeypatch.delenv("IMLCA_DATA", raising=False)
    with pytest.raises(DataError, match=f"{name}: no data root; set data.root or the IMLCA_DATA"):
        load_benchmark(DataConfig(benchmark=name, task_sizes=[1]), 1993)


@pytest.mark.parametrize("name, path", [
    ("cifar100", "cifar-100-python/train"), ("imagenet_r", "imagenet-r/train"), ("imagenet_a", "imagenet-a/train"),
    ("cub", "cub/train"), ("omnibenchmark", "omnibenchmark/train"), ("vtab", "vtab/train"),
    ("cars", "stanford_cars/devkit/cars_meta.mat"), ("imagefolder", "train"),
])
def test_missing_directory(tmp_path, name, path):
    with pytest.raises(DataError) as err:
        load(name, tmp_path, task_sizes=[1])
    message = str(err.value)
    assert message.startswith(f"{name}: {tmp_path / path} not found; expected ") and "\n" not in message
    assert message.endswith("set data.root or IMLCA_DATA")
