"""`imlca report` reads finished runs back from a real sqlite MLflow store."""
import pytest

from imlca.tracking.report import collect, format_paper, format_table
from imlca.tracking.store import Tracker


def log_run(tracker, benchmark, seed, values, rule="ties", status="FINISHED"):
    run = tracker.start_run(f"{benchmark}-{seed}", {"seed": seed}, {"benchmark": benchmark, "seed": seed,
                                                                    "merge_rule": rule, "imlca.kind": "trial"})
    metrics = {f"{m}/{k}": v for m, row in values.items() for k, v in zip(("avg_acc", "last_acc", "forgetting", "forgetting_authors"), row)}
    tracker.log_metrics(run, metrics, step=0)
    tracker.end_run(run, status)


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp")


def test_report_means_and_stds_over_seeds(tracker, capsys):
    log_run(tracker, "cifar100", 1993, {"im": (90.0, 80.0, 5.0), "im_lca": (94.0, 90.0, 2.0)})
    log_run(tracker, "cifar100", 1994, {"im": (92.0, 82.0, 7.0), "im_lca": (95.0, 91.0, 3.0)})
    log_run(tracker, "cifar100", 1995, {"im": (1.0, 1.0, 1.0)}, status="FAILED")  # not counted
    log_run(tracker, "cifar100", 1996, {"mos": (93.0, 88.0, 4.0)})
    table = collect(tracker)
    assert set(table) == {("cifar100", "ties", "im"), ("cifar100", "ties", "im_lca"), ("cifar100", "ties", "mos")}
    lines = format_table(table)
    # im: mean(90, 92) = 91, sample std = sqrt(((90-91)^2 + (92-91)^2) / 1) = 1.414
    assert lines[2] == "| cifar100 | ties | IM | 2 |  91.00 ± 1.41 |  81.00 ± 1.41 |   6.00 ± 1.41 |"
    paper = format_paper(table)
    cifar = {line.split()[1]: line for line in paper if line.startswith("cifar100 ")}
    # a row per method recorded: ours (mean ± std), recorded (mean ± std where more than one run), diff
    assert list(cifar) == ["IM", "IM+CA", "IM+LCA", "SLCA", "EASE", "MOS"]
    assert cifar["IM"].split() == ["cifar100", "IM", "91.00", "±", "1.41", "92.82", "-1.82"]  # 91.00 - 92.82
    assert cifar["IM+LCA"].split()[2:] == ["94.50", "±", "0.71", "94.80", "-0.30"]
    assert cifar["IM+CA"].split()[2:] == ["not", "run", "94.00"]
    assert cifar["SLCA"].split()[2:] == ["not", "run", "93.70", "±", "0.33"]
    assert cifar["MOS"].split()[2:] == ["93.00", "(n=1)", "94.29", "±", "0.31", "-1.29"]  # one run: no spread


def test_paper_report_uses_the_authors_forgetting(tracker):
    # (Ā, last, forgetting, forgetting_authors): the two forgetting values differ so the test sees which is shown
    log_run(tracker, "cub", 1993, {"im_lca": (90.0, 85.0, -1.0, 4.0)})
    log_run(tracker, "cub", 1994, {"im_lca": (91.0, 86.0, 0.0, 6.0)})
    paper = format_paper(collect(tracker))
    cub = [line for line in paper if line.startswith("cub ")]
    assert len(cub) == 7 and "90.50 ± 0.71" in cub[2]  # Ā of IM+LCA, then the second table
    # authors': mean(4, 6) = 5, sample std = sqrt(2) = 1.41; no sample-weighted Ā logged by these runs
    assert cub[6].split() == ["cub", "IM+LCA", "-", "5.00", "±", "1.41"]


def test_an_experiment_created_meanwhile_by_another_process_is_used(tracker):
    """Two sweeps started at once both find no experiment and both create it: the second takes the first's."""
    assert tracker._create("exp") == tracker.experiment_id
