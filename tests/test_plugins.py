"""Plugins (imlca/plugins.py): the extending guide's module registers a merge rule and an alignment loss that a run
uses, named by `plugins:` or by an installed entry point; a plugin that fails, or a name a Ray worker lacks, is one
line naming the module and the process (exit 2 from the CLI). The two-node sweep: tests/test_cluster_plugins.py."""
from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, TINY, tiny_overrides
from plugin_example import MODULE, guide_block, importable, write_broken, write_entry_point, write_plugin


@pytest.fixture
def plugin_path(tmp_path):
    """The guide's module importable in this process only (not in Ray's workers)."""
    with importable(write_plugin(tmp_path / "plugins")) as folder:
        yield folder


def cli(args: list[str], cwd, pythonpath: list) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, REPO / "platform"])),
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    return subprocess.run([sys.executable, "-m", "imlca", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_the_guides_rule_and_loss_compute_what_they_say(plugin_path):
    from imlca.core.gaussian_bank import GaussianBank
    from imlca.core.lca import align_heads
    from imlca.registries import ALIGN_LOSSES, MERGE_RULES

    importlib.import_module(MODULE)
    wavg = MERGE_RULES.load("wavg")
    assert torch.equal(wavg(torch.tensor([4.0, -8.0]), torch.tensor([8.0, 4.0])), torch.tensor([5.0, -5.0]))

    bank = GaussianBank(3, 1e-4)
    bank.update(torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.1, 0.0], [0.0, 1.0, 0.2], [0.1, 0.9, 0.0]]),
             torch.tensor([0, 0, 1, 1]))

    def aligned(loss: str, lam: float):
        return align_heads(torch.zeros(2, 3), bank, [0, 1], lam, 8, 2, 4, 0.1, 0.9, 5e-4,
                           torch.Generator().manual_seed(0), task_sizes=[2], loss=ALIGN_LOSSES.load(loss))

    # label smoothing 0 is the plain mean cross-entropy: the same weights as CA, bit for bit
    assert torch.equal(aligned("smooth_ce", 0.0)[0], aligned("ce", 0.0)[0])
    weight, history = aligned("smooth_ce", 0.3)
    assert not torch.equal(weight, aligned("ce", 0.0)[0])
    assert all(v == v for v in history["loss"]) and all(v != v for v in history["ce"] + history["spread"])  # NaN


def test_a_run_uses_the_plugin_named_by_the_config(plugin_path, tiny_run):
    from imlca.config import load_config
    from imlca.engine.protocol import run_protocol

    cfg = load_config(TINY, tiny_overrides(plugins=f"[{MODULE}]", **{"merge.rule": "wavg",
                                                                     "align.method": "im_smooth"}))
    result = run_protocol(cfg)
    # task 0 trains as tiny's (no merge, no alignment yet); from task 1 on the rule and the loss are the plugin's
    assert result.acc["im_smooth"][0] == tiny_run.acc["im"][0] == result.acc["im"][0]
    smooth, ca = (torch.cat(result.heads[m]) for m in ("im_smooth", "im_ca"))
    assert not torch.equal(smooth, ca)  # label smoothing 0.1 against plain cross-entropy, on the same samples
    last = result.reports[-1]
    assert math.isnan(last["im_smooth/align_ce"]) and last["im_smooth/align_loss"] > 0 and last["im_ca/align_ce"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(result.merged.values(), tiny_run.merged.values()))


def test_an_entry_point_registers_in_a_new_process(tmp_path):
    """An installed distribution's entry point (no `plugins:` key) is imported by a process that builds a config."""
    folder = write_entry_point(write_plugin(tmp_path / "site"))
    build = ("from imlca.config import load_config; "
             f"cfg = load_config({str(TINY)!r}, ['merge.rule=wavg', 'align.method=im_smooth']); "
             "print(cfg.merge.rule, cfg.align.method)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO / "platform")])}
    done = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout == "wavg im_smooth\n", done.stderr
    without = cli(["run", str(TINY), "--set", "merge.rule=wavg"], tmp_path, [])
    assert without.returncode == 2 and "config key 'merge.rule': unknown value 'wavg'" in without.stderr


@pytest.mark.parametrize("how", ["plugins", "entry point"])
def test_a_plugin_that_fails_is_one_line_naming_it_and_the_process(tmp_path, how):
    folder = write_broken(tmp_path / "site")
    if how == "plugins":
        done = cli(["run", str(TINY), "--set", "plugins=[broken_plugin, no_such_plugin]"], tmp_path, [folder])
        origin = "(listed under plugins:)"
    else:
        done = cli(["run", str(TINY)], tmp_path, [write_entry_point(folder, "broken_plugin", "broken")])
        origin = "(entry point 'wavg' of imlca.plugins)"
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: plugin 'broken_plugin' {origin} failed to load in the driver (pid ")
    assert "RuntimeError: needs a GPU driver; ship it with the job" in line
    assert not (tmp_path / "outputs").exists()


def test_on_ray_a_worker_without_the_plugin_stops_the_run_with_one_line(plugin_path, ray_cluster):
    """The module is importable here but not in Ray's workers (as a plugin not shipped to the cluster); a name
    registered in this process alone is unknown to them too."""
    from imlca.config import load_config
    from imlca.orchestration.ray_step import run_distributed
    from imlca.plugins import PluginError
    from imlca.registries import MERGE_RULES

    cfg = load_config(TINY, tiny_overrides(plugins=f"[{MODULE}]", **{"merge.rule": "wavg"}))
    with pytest.raises(PluginError) as err:
        run_distributed(cfg)
    message = str(err.value)
    assert message.startswith(f"plugin '{MODULE}' (listed under plugins:) failed to load in the TaskWorker (pid ")
    assert f"ModuleNotFoundError: No module named '{MODULE}'" in message and "\n" not in message

    MERGE_RULES.register("here_only", "imlca.core.merging:mean")
    with pytest.raises(PluginError) as err:
        run_distributed(load_config(TINY, tiny_overrides(**{"merge.rule": "here_only"})))
    message = str(err.value)
    assert message.startswith("the TaskWorker (pid ") and "\n" not in message
    assert ("refused the config the driver accepted (config key 'merge.rule': unknown value 'here_only'; use one of "
            "max_abs, mean, ties): a plugin registers the name there but not here") in message


def test_plugins_must_be_a_list_of_module_names():
    from imlca.config import load_config
    from imlca.errors import ConfigError

    with pytest.raises(ConfigError, match=r"config key 'plugins': expected a list of module names"):
        load_config(TINY, ["plugins=wavg_plugin"])


def test_the_guides_other_registrations_are_valid_config_values(plugin_path):
    from imlca.config import load_config

    (plugin_path / "more_choices.py").write_text(guide_block("# more_choices.py"))
    cfg = load_config(TINY, ["plugins=[more_choices]", "model.backbone=vit_narrow", "data.benchmark=my_folder",
                             "data.task_sizes=[2, 2]"])
    assert (cfg.model.backbone, cfg.data.benchmark) == ("vit_narrow", "my_folder")


def test_a_method_whose_loss_is_not_registered_is_refused(plugin_path):
    from imlca.config import load_config
    from imlca.errors import ConfigError
    from imlca.registries import METHODS, MethodSpec

    METHODS.register("im_focal", MethodSpec("IM+focal", "focal"))  # the plugin forgot ALIGN_LOSSES.register
    with pytest.raises(ConfigError, match=r"^config key 'align.compare': method 'im_focal' aligns with loss 'focal', "
                                          r"which is not registered; use one of ce, lca"):
        load_config(TINY, ["align.compare=[im_focal]"])


@pytest.mark.slow
def test_a_sweep_whose_trials_lack_the_plugin_stops_with_it_and_retries_nothing(plugin_path, ray_cluster, tmp_path,
                                                                                 monkeypatch):
    """The sweep's trial processes cannot import the module: the sweep raises the trial's PluginError (exit 2 from
    the CLI) after one failure and one restart, not max_failures retries of each trial."""
    from imlca.config.sweep import load_sweep
    from imlca.orchestration.launch import launch_sweep
    from imlca.plugins import PluginError

    (tmp_path / "s.yaml").write_text(f"base: {TINY}\nset: {{plugins: [{MODULE}], merge.rule: wavg, train.epochs: 1}}\n"
                                     "max_failures: 5\n")
    sweep = load_sweep(tmp_path / "s.yaml")
    sweep.cfg.storage_path = str(tmp_path / "ray_results")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(PluginError) as err:
        launch_sweep(sweep)
    assert str(err.value).startswith(f"plugin '{MODULE}' (listed under plugins:) failed to load in the Tune trial (pid ")
    (errors,) = (tmp_path / "ray_results").glob("*/*/error.txt")  # Tune's record of the trial's failures
    assert "Failure # 1" in errors.read_text() and "Failure # 3" not in errors.read_text()  # not 6 with 5 retries
