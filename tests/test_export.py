"""A run's exported model is reusable elsewhere: peft loads the adapter into a fresh timm backbone and the run's
test accuracy comes back exactly; `imlca.load` and `imlca predict` name the classes of image files."""
import json
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch.utils.data import DataLoader

import imlca
from imlca.cli import main
from imlca.config import load_config
from imlca.core.metrics import predict, task_accuracies
from imlca.engine.export import export_run_folder, fresh_backbone
from imlca.engine.artifacts import write_run
from imlca.engine.protocol import run_protocol
from imlca.engine.runner import TaskRunner

from conftest import TINY, tiny_overrides


def finished_run(tmp_path, **overrides):
    cfg = load_config(TINY, tiny_overrides(**overrides))
    result = run_protocol(cfg)
    write_run(tmp_path, cfg, result)
    return cfg, result, export_run_folder(tmp_path, cfg)


def test_peft_loads_the_exported_adapter_and_reproduces_test_accuracy(tmp_path):
    cfg, result, folder = finished_run(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (folder / "adapter").iterdir()}
    backbone = PeftModel.from_pretrained(fresh_backbone(cfg), str(folder / "adapter")).eval()
    head = load_file(str(folder / "head.safetensors"))["weight"]
    benchmark = TaskRunner(cfg).benchmark  # the test images, labelled with class-order positions
    runner = TaskRunner(cfg)
    loader = DataLoader(benchmark.view("test", range(3), runner.test_tf), batch_size=64)
    feats, targets = [], []
    with torch.no_grad():
        for images, labels in loader:
            feats.append(backbone.forward_head(backbone.forward_features(images), pre_logits=True))
            targets.append(labels)
    bounds = [benchmark.split.task_range(j) for j in range(3)]
    row = task_accuracies(predict(torch.cat(feats), [head]), torch.cat(targets), bounds)
    assert [float(v) for v in row] == pytest.approx(result.acc[cfg.align.method][-1], abs=1e-4)


@pytest.mark.parametrize("space", ["factors", "delta", "slca"])
def test_load_and_predict_name_every_test_image_as_the_run_scored_it(tmp_path, space, capsys):
    """All test images as PNG files → class names → per-task accuracy equals the run's last accuracy row (IM in
    both merge spaces; the slca family: its whole backbone and affine heads)."""
    from torchvision.transforms.functional import to_pil_image

    cfg, result, folder = finished_run(tmp_path, **({"align.method": "slca"} if space == "slca" else
                                                    {"merge.space": space}))
    if space != "factors":
        assert (folder / "backbone.safetensors").is_file() and not (folder / "adapter").exists()
    assert ("bias" in load_file(str(folder / "head.safetensors"))) == (space == "slca")
    model = imlca.load(tmp_path)
    assert json.loads((folder / "classes.json").read_text()) == model.classes == [f"class {c}" for c in
                                                                                 TaskRunner(cfg).benchmark.split.order]
    view = TaskRunner(cfg).benchmark.view("test", range(3), lambda image: image)
    paths, positions = [], []
    for i in range(len(view)):
        image, position = view[i]
        paths.append(tmp_path / f"img{i}.png")
        to_pil_image(image).save(paths[-1])
        positions.append(position)
    names = model.predict(paths)
    correct = {}
    for name, position in zip(names, positions):
        correct.setdefault(position // 2, []).append(name == model.classes[position])  # 2 classes per task
    row = [100 * sum(c) / len(c) for _, c in sorted(correct.items())]
    assert row == pytest.approx(result.acc[cfg.align.method][-1], abs=1e-4)
    assert main(["predict", str(tmp_path), str(paths[0])]) == 0
    assert capsys.readouterr().out == f"{paths[0]}\t{names[0]}\n"


class Pickled:
    """A pickle that would run a command when loaded (what a hostile `adapter_model.bin` holds)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_model_folder_that_is_not_ours_is_one_line_and_nothing_is_unpickled(tmp_path, capsys):
    import pickle
    import shutil

    _, _, folder = finished_run(tmp_path / "run")
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(image)
    cases = {"not json": lambda f: (f / "model.json").write_text("{not json"),
             "a json list": lambda f: (f / "model.json").write_text("[1, 2]"),
             "a pickled adapter": lambda f: ((f / "adapter" / "adapter_model.safetensors").unlink(),
                                             (f / "adapter" / "adapter_model.bin").write_bytes(
                                                 pickle.dumps(Pickled(tmp_path / "unpickled"))))}
    expected = {"not json": "model.json is not an imlca model description (Expecting property name",
                "a json list": "model.json is not an imlca model description (no merge_space",
                "a pickled adapter": "has no adapter/adapter_model.safetensors; imlca reads weights from safetensors"}
    for name, spoil in cases.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(folder, copy)
        spoil(copy)
        assert main(["predict", str(copy), str(image)]) == 2, name
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"error: {copy}") and expected[name] in line, line
        assert line.endswith("give a folder written by imlca's export (a run's model/), or export it again")
    assert not (tmp_path / "unpickled").exists()


def test_import_imlca_stays_light():
    code = "import sys, imlca; print('torch' in sys.modules, 'mlflow' in sys.modules, callable(imlca.run))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["False", "False"]


def test_an_imagefolder_runs_model_names_classes_by_their_folders(tmp_path, capsys):
    """`classes.json` and `imlca predict` give an ImageFolder tree's folder names, not `class <id>`."""
    from PIL import Image

    from imlca.data.synthetic import make_images

    folders = ["ant", "bee", "cat", "dog", "eel", "fox"]  # class id k → folders[k] (sorted, as ImageFolder)
    for part, seed in (("train", 1), ("test", 2)):
        images = make_images(10, seed)
        for i, (image, label) in enumerate(zip(images.images, images.labels)):
            (tmp_path / "tree" / part / folders[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(tmp_path / "tree" / part / folders[label] / f"{i}.png")
    run = tmp_path / "run"
    cfg, _, folder = finished_run(run, **{"data.benchmark": "imagefolder", "data.root": str(tmp_path / "tree"),
                                          "data.task_sizes": "[2, 2, 2]"})
    order = TaskRunner(cfg).benchmark.split.order
    assert json.loads((folder / "classes.json").read_text()) == [folders[c] for c in order]
    image = next((tmp_path / "tree" / "test" / "cat").iterdir())
    assert main(["predict", str(run), str(image)]) == 0
    assert capsys.readouterr().out.split("\t")[1].strip() in folders
