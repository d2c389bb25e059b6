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


def test_import_imlca_stays_light():
    code = "import sys, imlca; print('torch' in sys.modules, 'mlflow' in sys.modules, callable(imlca.run))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["False", "False"]
