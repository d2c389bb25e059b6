"""The CLI points at the fix: did-you-mean for keys, values and bench rows; a bare list in a sweep space; a typo in
`report --select`; `report --paper` on a store without the paper's benchmarks; one seed without a fake spread;
`--version` and a `--help` that names every command. Each through the real CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TINY

from imlca.cli import COMMANDS


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform"), "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'm.db'}"}
    return subprocess.run([sys.executable, "-m", "imlca", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip()


def test_version_and_help_name_every_command(tmp_path):
    from imlca import __version__

    version = cli(["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout == f"imlca {__version__}\n"
    done = cli(["--help"], tmp_path)
    description = " ".join(done.stdout.split("\n\n")[1].split())  # the paragraph after the usage line
    assert f"python -m imlca {'|'.join(COMMANDS)} ..." in description
    assert "DESIGN" not in done.stdout  # no pointer to a file users do not have


def test_a_misspelt_key_or_value_gets_the_closest_name(tmp_path):
    key = one_error(cli(["run", str(TINY), "--set", "align.lamda=0.2"], tmp_path))
    assert key.startswith("error: config key 'align.lamda': unknown key; did you mean 'align.lam'? valid keys here: ")
    value = one_error(cli(["run", str(TINY), "--set", "merge.rule=max_ab"], tmp_path))
    assert value == "error: config key 'merge.rule': unknown value 'max_ab'; did you mean 'max_abs'? use one of " \
                    "max_abs, mean, ties"
    family = one_error(cli(["run", str(TINY), "--set", "method=slca"], tmp_path))  # the key one section down
    assert family.startswith("error: config key 'method': unknown key; did you mean 'align.method'? valid keys ")
    assert not (tmp_path / "outputs").exists()


def test_a_bare_list_in_a_sweep_space_suggests_a_grid(tmp_path):
    (tmp_path / "s.yaml").write_text(f"base: {TINY}\nspace: {{align.lam: [0.1, 0.3]}}\n")
    assert one_error(cli(["sweep", "s.yaml"], tmp_path)) == (
        "error: config key 'space.align.lam': a bare list names no distribution; write {grid: [0.1, 0.3]} to try "
        "every value (or {choice: [0.1, 0.3]} to sample them)")


def test_bench_lists_its_rows(tmp_path):
    from imlca.bench import BENCHMARKS

    assert f"run only this row (repeatable): {', '.join(BENCHMARKS)}" in " ".join(
        cli(["bench", "--help"], tmp_path).stdout.split())
    assert one_error(cli(["bench", "--only", "end_to_nd"], tmp_path)).startswith(
        "error: unknown bench row 'end_to_nd'; did you mean 'end_to_end'? the rows: lora_worker, merge, ")


def test_report_select_refuses_a_key_that_is_not_in_the_config(tmp_path):
    assert one_error(cli(["report", "--select", "align.lamda"], tmp_path)) == (
        "error: --select align.lamda: not a config key; did you mean 'align.lam'?")
    assert not (tmp_path / "m.db").exists()  # refused before the store is opened


def test_report_paper_on_a_store_without_the_papers_benchmarks_says_where_they_are(tmp_path):
    from imlca.tracking.store import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "imlca")
    run = tracker.start_run("one", {"seed": 1993}, {"benchmark": "digits_fashion20", "seed": 1993,
                                                    "merge_rule": "ties", "imlca.kind": "run"})
    tracker.log_metrics(run, {"im_lca/avg_acc": 80.0, "im_lca/last_acc": 70.0, "im_lca/forgetting": 5.0}, step=0)
    tracker.end_run(run, "FINISHED")
    paper = cli(["report", "--paper"], tmp_path)
    assert paper.returncode == 0, paper.stderr
    assert paper.stdout.splitlines()[-1] == (
        "experiment 'imlca' holds runs of digits_fashion20, none of the paper's benchmarks; the paper sweeps "
        "(sweeps/paper/) track into another: --experiment imlca-paper")
    table = cli(["report"], tmp_path)
    # one seed: its value and the count, not a spread of 0
    assert "| digits_fashion20 | ties | IM+LCA | 1 |  80.00 (n=1) |  70.00 (n=1) |   5.00 (n=1) |" in table.stdout
    assert "±" not in table.stdout
