"""Figures carry exactly the numbers they are drawn from (read back from the Figure's artists), the sweep figures
and report pages those of runs logged to a real sqlite MLflow store and read back from it, best in bold, with
every figure inlined."""
import base64
import json
import math
import re

import pytest

from imlca.tracking import figures
from imlca.config import load_config
from imlca.tracking.report_pages import build_report, csv_text, html_page, latex, markdown, sweep_figures
from imlca.tracking.report import records
from imlca.tracking.runs import TrackedRun
from imlca.tracking.store import Tracker

from conftest import TINY, tiny_overrides

ACC = {"im": [[90.0], [60.0, 80.0], [40.0, 50.0, 70.0]], "im_lca": [[90.0], [70.0, 82.0], [55.0, 60.0, 75.0]]}


def lines_by_label(fig):
    ax = fig.axes[0]
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_accuracy_curves_plot_a_t_of_every_method():
    fig = figures.accuracy_curves(ACC)
    # A_t = mean of row t: IM (90), (60+80)/2 = 70, (40+50+70)/3 = 53.33
    assert lines_by_label(fig) == {"IM": [90.0, 70.0, pytest.approx(160 / 3)],
                                   "IM+LCA": [90.0, 76.0, pytest.approx(190 / 3)]}


def test_accuracy_heatmap_holds_the_matrix_with_nothing_above_the_diagonal():
    mesh = figures.accuracy_heatmap(ACC["im"]).axes[0].collections[0]
    grid = mesh.get_array().reshape(3, 3)
    assert [[None if math.isnan(v) else float(v) for v in row] for row in grid.filled(math.nan)] == [
        [90.0, None, None], [60.0, 80.0, None], [40.0, 50.0, 70.0]]


def test_sweep_heatmap_is_the_mean_over_seeds_on_the_grid():
    cells = {(0.1, 0.5): [60.0, 62.0], (0.1, 1.0): [70.0], (0.3, 0.5): [50.0], (0.3, 1.0): [80.0, 84.0]}
    mesh = figures.sweep_heatmap(cells, "align.lam", "merge.alpha").axes[0].collections[0]
    # rows = alpha (0.5, 1.0), columns = lam (0.1, 0.3)
    assert mesh.get_array().reshape(2, 2).tolist() == [[61.0, 50.0], [70.0, 82.0]]


def test_method_bars_heights_and_error_bars_are_mean_and_std_over_seeds():
    fig = figures.method_bars({("cifar100", "im"): [90.0, 92.0], ("cifar100", "im_lca"): [94.0, 95.0, 96.0]})
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [91.0, 95.0]
    caps = [c for c in ax.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    segments = [seg for c in caps for seg in c.errorbar.lines[2][0].get_segments()]
    spans = sorted(round(float(s[1][1] - s[0][1]) / 2, 4) for s in segments)
    assert spans == [1.0, round(math.sqrt(2), 4)]  # sample std of (94, 95, 96) and of (90, 92)


def test_method_bars_draw_the_six_methods_of_the_comparison_in_registry_order():
    methods = ["im", "im_ca", "im_lca", "slca", "ease", "mos"]
    values = {(b, m): [50.0 + i + 10 * j, 52.0 + i + 10 * j] for j, b in enumerate(["cub", "vtab"])
              for i, m in enumerate(reversed(methods))}
    ax = figures.method_bars(values).axes[0]
    assert ax.get_legend_handles_labels()[1] == ["IM", "IM+CA", "IM+LCA", "SLCA", "EASE", "MOS"]
    bars = [[p.get_height() for p in c] for c in ax.containers if hasattr(c, "patches")]
    assert bars == [[51.0 + 5 - i, 61.0 + 5 - i] for i in range(6)]  # per method: cub, then vtab


def test_a_report_over_families_draws_every_method_once_per_benchmark_and_skips_keys_a_run_lacks():
    """IM trials (merge rule ties, no `mos.*` keys: an older version's runs) beside MOS trials (no rule): one bar
    group per benchmark, Ā against train.lr from every run, `mos.reg` swept by nobody; method keys are no axis."""
    from imlca.tracking.report import TrialRecord
    from imlca.tracking.report_pages import build_rows, swept_keys

    def record(i, method, rule, lr, extra):
        params = {"train.lr": str(lr), "align.method": method, "family": method.split("_")[0], **extra}
        return TrialRecord(str(i), f"r{i}", "digits", rule, 1993, params, {f"{method}/avg_acc": 50.0 + 10 * i})

    found = [record(0, "im_lca", "ties", 0.01, {}), record(1, "im_lca", "ties", 0.03, {}),
             record(2, "mos", "-", 0.01, {"mos.reg": "0.1"}), record(3, "mos", "-", 0.03, {"mos.reg": "0.1"})]
    assert swept_keys(found) == ["train.lr"]
    assert [(r.setting, r.method) for r in build_rows(found)] == [
        ("train.lr=0.01", "mos"), ("train.lr=0.03", "mos"), ("train.lr=0.01", "im_lca"), ("train.lr=0.03", "im_lca")]
    drawn = dict(sweep_figures(found))
    assert list(drawn) == ["Ā per benchmark and method", "Ā against train.lr"]
    bars = drawn["Ā per benchmark and method"].axes[0]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["digits"]
    assert [p.get_height() for p in bars.patches] == [55.0, 75.0]  # IM+LCA: mean(50, 60); MOS: mean(70, 80)
    lines = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
             for c in drawn["Ā against train.lr"].axes[0].containers}  # one errorbar per method
    assert lines == {"IM+LCA": ([0.01, 0.03], [50.0, 60.0]), "MOS": ([0.01, 0.03], [70.0, 80.0])}


def log_run(uri: str, seed: int, lam: float, final: dict[str, tuple[float, float, float]]) -> None:
    """One run through the project's tracking (`TrackedRun`, as `imlca run --track`): a task report per task of
    tiny.yaml's 3, the last with `final` (method → Ā, last accuracy, forgetting), the earlier ones 10 points lower
    (the store keeps every step; the figures must use the last); results.json's matrix gives the run's figures."""
    cfg = load_config(TINY, tiny_overrides(seed=seed, **{"align.lam": lam, "tracking.uri": uri,
                                                         "name": f"lam={lam} seed={seed}"}))
    run = TrackedRun(cfg)
    for task, lower in enumerate((20.0, 10.0, 0.0)):
        report = {"task": task, "train_loss": 1.0}
        report.update({f"{m}/{k}": v - lower for m, row in final.items()
                       for k, v in zip(("avg_acc", "last_acc", "forgetting"), row)})
        run.on_task(report)
    run.finish(lambda folder: (folder / "results.json").write_text(json.dumps({"acc": ACC})))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real sqlite MLflow store holding three finished runs: λ 0.1 (seeds 1, 2) and λ 0.5 (seed 1)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('m') / 'm.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would win over the config's tracking.uri
        log_run(uri, 1, 0.1, {"im": (60.0, 50.0, 20.0), "im_lca": (70.0, 65.0, 10.0)})
        log_run(uri, 2, 0.1, {"im": (62.0, 52.0, 22.0), "im_lca": (72.0, 67.0, 12.0)})
        log_run(uri, 1, 0.5, {"im": (61.0, 51.0, 21.0), "im_lca": (74.0, 60.0, 30.0)})
    return Tracker(uri, "imlca")


@pytest.fixture(scope="module")
def logged(store):
    return records(store)


def test_sweep_figures_plot_each_setting_mean_from_the_store(logged):
    """The figures the report draws from the records read back from the store (not points built here)."""
    drawn = dict(sweep_figures(logged))
    assert list(drawn) == ["Ā per benchmark and method", "Ā against align.lam"]
    ax = drawn["Ā against align.lam"].axes[0]
    means = {c.get_label(): list(c.lines[0].get_ydata()) for c in ax.containers}  # one errorbar per method
    assert means == {"IM": [61.0, 61.0], "IM+LCA": [71.0, 74.0]}  # λ 0.1: (60 + 62) / 2, (70 + 72) / 2
    assert [list(c.lines[0].get_xdata()) for c in ax.containers] == [[0.1, 0.5], [0.1, 0.5]]
    # bars: every run of the benchmark per method, IM (60, 62, 61), IM+LCA (70, 72, 74)
    assert [p.get_height() for p in drawn["Ā per benchmark and method"].axes[0].patches] == [61.0, 72.0]


def test_each_tracked_run_logs_its_accuracy_figures(store, logged):
    for record in logged:
        names = {a.path for a in store.client.list_artifacts(record.run_id, "figures")}
        assert names == {"figures/accuracy_curves.png", "figures/accuracy_matrix_im.png",
                         "figures/accuracy_matrix_im_lca.png"}


def test_report_formats_show_each_setting_best_in_bold(logged):
    report = build_report("sweep", logged)
    md = markdown(report)
    # λ=0.1: IM+LCA Ā (70, 72) → 71 ± 1.41; best Ā is λ=0.5's 74 (one seed); lowest forgetting IM+LCA λ=0.1: 11
    assert ("| synthetic | ties | align.lam=0.1 | IM+LCA | 2 | 71.00 ± 1.41 | **66.00 ± 1.41** | **11.00 ± 1.41** |"
            in md)
    # one seed has no spread to show (not "± 0.00"): its count instead, and an empty std in the CSV
    assert "| synthetic | ties | align.lam=0.5 | IM+LCA | 1 | **74.00 (n=1)** | 60.00 (n=1) | 30.00 (n=1) |" in md
    assert "synthetic,ties,align.lam=0.1,im,2,61.0000,1.4142" in csv_text(report)
    assert "synthetic,ties,align.lam=0.5,im_lca,1,74.0000,,60.0000,,30.0000,\n" in csv_text(report).replace("\r", "")
    assert r"\textbf{74.00 (n=1)}" in latex(report) and "± 0.00" not in md
    page = html_page(report)
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert "<b>74.00 (n=1)</b>" in page


def test_trials_frame_has_one_row_per_trial_with_swept_values_and_metrics(logged):
    from imlca.cli.notebook import trials_frame

    frame = trials_frame(logged, ["align.lam"])
    assert list(frame["run"]) == ["lam=0.1 seed=1", "lam=0.1 seed=2", "lam=0.5 seed=1"]
    assert list(frame["align.lam"]) == ["0.1", "0.1", "0.5"]
    assert list(frame["im_lca/avg_acc"]) == [70.0, 72.0, 74.0] and list(frame["im/forgetting"]) == [20.0, 22.0, 21.0]
