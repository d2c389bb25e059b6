"""Every bad input is refused by the CLI with exit code 2 and one line, before anything is written."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY as TINY_PATH

TINY = str(TINY_PATH)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **(env or {})}
    return subprocess.run([sys.executable, "-m", "imlca", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=full_env)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def make_imagefolder(root: Path, corrupt: bool) -> None:
    from PIL import Image

    for part in ("train", "test"):
        for cls in ("a", "b"):
            (root / part / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(root / part / cls / f"{i}.png")
    if corrupt:
        (root / "train" / "b" / "1.png").write_bytes(b"not a png")


CASES = {  # name → (args builder, expected start of the message after "error: ")
    "malformed yaml": (lambda d: ["run", write(d / "c.yaml", "lora: [1\n")], "c.yaml: malformed YAML"),
    "unknown key": (lambda d: ["run", TINY, "--set", "lora.rnak=4"], "config key 'lora.rnak': unknown key"),
    "wrong type": (lambda d: ["run", TINY, "--set", "train.epochs=two"], "config key 'train.epochs': expected int"),
    "negative lambda": (lambda d: ["run", TINY, "--set", "align.lam=-1"], "config key 'align.lam': must be >= 0"),
    "alpha zero": (lambda d: ["run", TINY, "--set", "merge.alpha=0"], "config key 'merge.alpha': must be > 0"),
    "rank zero": (lambda d: ["run", TINY, "--set", "lora.rank=0"], "config key 'lora.rank': must be >= 1"),
    "merge rule": (lambda d: ["run", TINY, "--set", "merge.rule=magmax"], "config key 'merge.rule': unknown value"),
    "benchmark": (lambda d: ["run", TINY, "--set", "data.benchmark=mnist"], "config key 'data.benchmark': unknown"),
    "backbone": (lambda d: ["run", TINY, "--set", "model.backbone=resnet50"], "config key 'model.backbone': unknown"),
    "missing data root": (lambda d: ["run", TINY, "--set", "data.benchmark=cifar100", "--set",
                                     f"data.root={d / 'nowhere'}"], "cifar100: "),
    "unreadable image": (lambda d: (make_imagefolder(d / "imgs", corrupt=True), [
        "run", TINY, "--set", "data.benchmark=imagefolder", "--set", f"data.root={d / 'imgs'}", "--set",
        "data.task_sizes=[1, 1]"])[1], "cannot read image"),
    "missing checkpoint": (lambda d: ["run", TINY, "--set", f"model.checkpoint={d / 'vit.safetensors'}"],
                           "backbone checkpoint"),
    "cuda without gpu": (lambda d: ["run", TINY, "--set", "train.device=cuda"], "train.device is 'cuda'"),
    "unreachable mlflow": (lambda d: ["run", TINY, "--track"], "MLflow server http://127.0.0.1:"),
    "pretrained random-only": (lambda d: ["run", TINY, "--set", "model.pretrained=true"],
                               "config key 'model.pretrained': backbone vit_test_tiny has no pretrained weights"),
    "resume nothing": (lambda d: ["run", TINY, "--resume"], "--resume needs --out"),
    "name out of output_dir": (lambda d: ["run", TINY, "--set", "name=../../x"],
                               "config key 'name': must be one folder name (it names an output folder), not a name "
                               "with an empty, '.' or '..' part"),
    "name of two folders": (lambda d: ["run", TINY, "--set", "name=a/b"], "config key 'name': must be one folder"),
    "slca key with im": (lambda d: ["run", TINY, "--set", "slca.ca_epochs=3"],
                         "config key 'slca.ca_epochs': is a setting of the slca family, but align.method is im_lca"),
    "ease key with im": (lambda d: ["run", TINY, "--set", "ease.alpha=0.5"],
                         "config key 'ease.alpha': is a setting of the ease family, but align.method is im_lca"),
    "ease bottleneck wider than the block": (
        lambda d: ["run", TINY, "--set", "align.method=ease", "--set", "ease.bottleneck=64"],
        "config key 'ease.bottleneck': 64 is wider than vit_test_tiny's narrowest block (32)"),
    "ease beta without the pre-trained subspace": (
        lambda d: ["run", TINY, "--set", "align.method=ease", "--set", "ease.beta=1"], "config key 'ease.beta'"),
    "mos key with ease": (lambda d: ["run", TINY, "--set", "align.method=ease", "--set", "mos.reg=0.5"],
                          "config key 'mos.reg': is a setting of the mos family, but align.method is ease"),
    "mos retrieval rounds below 1": (
        lambda d: ["run", TINY, "--set", "align.method=mos", "--set", "mos.retrieval_rounds=0"],
        "config key 'mos.retrieval_rounds': must be >= 1 (got 0)"),
    "mos bottleneck wider than the block": (
        lambda d: ["run", TINY, "--set", "align.method=mos", "--set", "mos.bottleneck=33"],
        "config key 'mos.bottleneck': 33 is wider than vit_test_tiny's narrowest block (32)"),
    "mos unknown reweight": (lambda d: ["run", TINY, "--set", "align.method=mos", "--set", "mos.reweight=never"],
                             "config key 'mos.reweight': unknown value 'never'"),
    "slca milestones": (lambda d: ["run", TINY, "--set", "align.method=slca", "--set", "slca.milestones=[5, 2]"],
                        "config key 'slca.milestones': must be increasing"),
    "slca fresh norm on a cnn": (lambda d: ["run", TINY, "--set", "align.method=slca", "--set",
                                            "model.backbone=tf_efficientnet_lite0", "--set",
                                            "slca.fresh_final_norm=true"], "config key 'slca.fresh_final_norm'"),
    "slca negative scale": (lambda d: ["run", TINY, "--set", "align.method=slca", "--set",
                                       "slca.backbone_lr_scale=-0.01"], "config key 'slca.backbone_lr_scale'"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_nothing_written(name, tmp_path, monkeypatch, capsys):
    """In-process through the CLI's own `main` (the console script calls exactly this)."""
    from imlca.cli import main

    build, expected = CASES[name]
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}" if name == "unreachable mlflow" else f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = build(tmp_path)
    if "--resume" not in args:
        args += ["--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert not out.exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_console_script_exit_code_and_single_line(tmp_path):
    proc = cli(["run", TINY, "--set", "lora.rank=0", "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "error: config key 'lora.rank': must be >= 1 (got 0)\n"


def test_hub_weights_out_of_reach_is_one_line(tmp_path):
    """timm's hub weights that cannot be fetched (offline, an empty cache): one line naming model.checkpoint."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    proc = cli(["run", TINY, "--set", "model.pretrained=true", "--set", "model.backbone=vit_tiny_patch16_224",
                "--out", str(tmp_path / "o")], tmp_path, env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: cannot fetch timm's vit_tiny_patch16_224 weights") and \
        proc.stderr.count("\n") == 1 and "model.checkpoint=" in proc.stderr


def test_gpus_on_a_cluster_without_any(tmp_path):
    proc = cli(["run", TINY, "--distributed", "--set", "resources.num_gpus=1", "--out", str(tmp_path / "o")],
               tmp_path, {"RAY_ADDRESS": ""})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: resources.num_gpus=1 but the Ray cluster has 0")
    assert not (tmp_path / "o").exists()


def test_corrupt_or_mismatched_checkpoint_refused_and_left_intact(tmp_path, monkeypatch, capsys):
    from imlca.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    short = ["--set", "data.task_sizes=[2, 4]"]
    assert main(["run", TINY, *short, "--out", str(out)]) == 0
    assert main(["run", TINY, *short, "--out", str(out)]) == 2  # an existing run is never overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert main(["run", TINY, *short, "--set", "align.lam=0.5", "--out", str(out), "--resume"]) == 2
    assert "belongs to a different experiment config" in capsys.readouterr().err
    state = out / "checkpoints" / "task-001" / "state.safetensors"
    corrupt = bytearray(state.read_bytes())
    corrupt[100] ^= 0xFF
    state.write_bytes(bytes(corrupt))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["run", TINY, *short, "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: checkpoint ") and "fails its checksum" in err and "\n" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_two_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch, capsys):
    """The default folder `<output_dir>/<name>-<time>` is made by the run itself; one already there (another run's,
    started in the same second) is left alone and the run takes `<name>-<time>-2`."""
    import imlca.cli.run
    from imlca.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(imlca.cli.run, "default_folder", lambda cfg: (tmp_path / "outputs", "tiny-20260101-000000"))
    other = tmp_path / "outputs" / "tiny-20260101-000000"
    other.mkdir(parents=True)
    (other / "results.json").write_text("the other run's")
    assert main(["run", TINY, "--set", "data.task_sizes=[2, 4]"]) == 0
    assert f"-> {other}-2" in capsys.readouterr().out
    assert (other.parent / f"{other.name}-2" / "results.json").is_file()
    assert [p.name for p in other.iterdir()] == ["results.json"] and (other / "results.json").read_text() == \
        "the other run's"
