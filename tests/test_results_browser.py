"""What a person looks at after a sweep, in a real headless Chromium: the self-contained HTML report the sweep
wrote (table = the runs' numbers, every figure loaded) and the MLflow UI of a real `mlflow server` (the trial
runs on the experiment's page, a logged figure in a trial's artifact view). The session's two-trial tiny sweep
(tests/conftest.py `smoke_sweep`, also tests/test_sweep.py's) serves all."""
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from imlca.cli import main

from browser import chromium, wait_until
from servers import mlflow_server

ALL_IMAGES_LOADED = ("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")


@pytest.fixture(scope="module")
def swept(smoke_sweep, tmp_path_factory):
    """The session's smoke sweep (sweeps/smoke.yaml: λ ∈ {0.1, 0.5}, tiny data, tracked in a sqlite store) served
    by a real `mlflow server` over its store, as `make ui` serves it; yields (server uri, a scratch folder)."""
    root = tmp_path_factory.mktemp("swept")
    with mlflow_server(root, store=Path(smoke_sweep.uri.removeprefix("sqlite:///"))) as uri:
        yield uri, root


def runs_of(uri):
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("imlca")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("imlca.kind") == "sweep")
    trials = [r for r in runs if r.data.tags.get("imlca.kind") == "trial"]
    return client, experiment, parent, trials


def test_sweep_reads_like_a_training_project(swept):
    client, experiment, parent, trials = runs_of(swept[0])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert sorted(r.info.run_name for r in trials) == ["lam=0.1 seed=1993", "lam=0.5 seed=1993"]
    for run in trials:
        assert run.inputs.dataset_inputs[0].dataset.name == "synthetic"
        paths = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
        assert paths == {"figures/accuracy_curves.png", "figures/accuracy_matrix_im.png",
                         "figures/accuracy_matrix_im_ca.png", "figures/accuracy_matrix_im_lca.png"}
    best = max(trials, key=lambda r: r.data.metrics["avg_acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best/avg_acc"] == pytest.approx(best.data.metrics["avg_acc"])
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_run_figures_plot_the_logged_metrics(swept):
    """The figures logged to a trial are drawn from its accuracy matrices: the same numbers as its metrics."""
    import json

    from imlca.tracking.outputs import run_figures

    client, _, _, trials = runs_of(swept[0])
    run = trials[0]
    results = json.loads(Path(client.download_artifacts(run.info.run_id, "results.json", str(swept[1]))).read_text())
    drawn = run_figures(results["acc"])
    curves = {line.get_label(): list(line.get_ydata())
              for line in drawn["figures/accuracy_curves.png"].axes[0].get_lines()}
    for method, label in (("im", "IM"), ("im_ca", "IM+CA"), ("im_lca", "IM+LCA")):
        logged = [m.value for m in sorted(client.get_metric_history(run.info.run_id, f"{method}/A_t"),
                                          key=lambda m: m.step)]
        assert curves[label] == pytest.approx(logged, abs=1e-4)
        grid = drawn[f"figures/accuracy_matrix_{method}.png"].axes[0].collections[0].get_array().reshape(3, 3)
        for j in range(3):
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, f"{method}/acc_{j}")}
            assert {t: float(grid[t, j]) for t in range(j, 3)} == pytest.approx(history, abs=1e-4)


def test_html_report_shows_the_runs_numbers_and_every_figure(swept, tmp_path):
    uri, root = swept
    _, _, _, trials = runs_of(uri)
    assert main(["report", "--uri", uri, "--format", "html", "--out", str(tmp_path)]) == 0
    page = tmp_path / "report.html"
    with chromium(tmp_path / "profile") as browser:
        browser.get(page.as_uri())
        loaded = wait_until(lambda: (lambda f: f if f and all(f) else None)(browser.execute_script(ALL_IMAGES_LOADED)),
                            "all report images loaded", driver=browser)
        assert len(loaded) == 2  # Ā per method × benchmark, Ā against align.lam
        browser.save_screenshot(str(tmp_path / "report.png"))
        runs = browser.find_element("id", "runs").text
        results = browser.find_element("id", "results").text
    assert (tmp_path / "report.png").stat().st_size > 10_000
    for run in trials:
        assert f"{run.info.run_name} {run.info.run_id} " in runs
        assert f"{run.data.metrics['im_lca/avg_acc']:.2f}" in runs
        lam = run.data.params["align.lam"]
        assert f"synthetic ties align.lam={lam} IM+LCA 1 {run.data.metrics['im_lca/avg_acc']:.2f} (n=1)" in results


def test_mlflow_ui_lists_the_trials_and_shows_a_logged_figure(swept, tmp_path):
    """MLflow 3.17's UI picks GenAI or Model training from its own switch (URL `workflowType`, else the browser's
    choice): the links imlca prints carry `workflowType=machine_learning`, which opens the experiment's runs."""
    from imlca.tracking.store import ui_link

    uri, _ = swept
    _, experiment, parent, trials = runs_of(uri)
    with chromium(tmp_path / "profile") as browser:
        browser.get(ui_link(uri, experiment.experiment_id))
        body = lambda: browser.find_element("tag name", "body").text  # noqa: E731
        wait_until(lambda: parent.info.run_name in body(), "the sweep's parent run in the runs table", 180, browser)
        assert "/runs" in browser.current_url and "Detect Issues" not in body()  # not the GenAI overview
        name_cell = browser.find_element(
            "xpath", f"//*[text()='{parent.info.run_name}']/ancestor::*[@role='gridcell'][1]")
        name_cell.find_element("css selector", "button").click()  # expand the parent: its trials are nested
        for run in trials:
            wait_until(lambda: run.info.run_name in body(), f"trial run '{run.info.run_name}'", driver=browser)
        browser.save_screenshot(str(tmp_path / "mlflow-runs.png"))
        run = trials[0]
        browser.get(f"{uri}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}/artifacts/"
                    "figures/accuracy_curves.png")
        widths = wait_until(lambda: [w for w in browser.execute_script(
            "return Array.from(document.images).filter(i => i.src.startsWith('blob:')).map(i => i.naturalWidth)")
            if w > 0], "the accuracy-curves figure in the artifact view", 180, browser)
        assert "figures/accuracy_curves.png" in body() and widths[0] == 500  # 5 in at MLflow's 100 dpi
