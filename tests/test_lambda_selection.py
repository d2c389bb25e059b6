"""Choosing on validation: `report --select` from a real sqlite MLflow store, and the confirmation sweep."""
from imlca.config.sweep import confirmation, load_sweep
from imlca.tracking.selection import collect_values, format_selection
from imlca.tracking.store import Tracker

from conftest import REPO


def log_run(tracker, lam, seed, val, test, ca=None):
    run = tracker.start_run(f"lam-{lam}-{seed}", {"align.lam": lam, "seed": seed}, {
        "benchmark": "digits_fashion20", "seed": seed, "merge_rule": "ties", "imlca.kind": "trial"})
    metrics = {"val_avg_acc": val, "avg_acc": test, "last_acc": test - 10, "forgetting": 5.0}
    if ca is not None:
        metrics.update({"im_ca/val_avg_acc": ca[0], "im_ca/avg_acc": ca[1]})
    tracker.log_metrics(run, metrics, step=0)
    tracker.end_run(run)


def test_the_value_best_on_validation_is_chosen_and_its_test_numbers_shown(tmp_path):
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    log_run(tracker, 0.1, 1993, val=70.0, test=66.0, ca=(69.0, 65.0))
    log_run(tracker, 0.1, 1994, val=72.0, test=68.0, ca=(71.0, 67.0))
    log_run(tracker, 10.0, 1993, val=71.0, test=75.0)  # best on test, not on validation: not chosen
    log_run(tracker, 10.0, 1994, val=70.0, test=77.0)
    table = collect_values(tracker, "align.lam")
    (group, by_value), = table.items()
    assert group == ("digits_fashion20", "ties") and set(by_value) == {"0.1", "10.0", "IM+CA"}
    lines = format_selection(table, "align.lam")
    # λ = 0.1: validation mean(70, 72) = 71.00 ± 1.41 beats λ = 10: mean(71, 70) = 70.50
    assert lines[2] == ("| digits_fashion20 | ties | 0.1 | 2 |  71.00 ± 1.41 |  67.00 ± 1.41 |  57.00 ± 1.41 |"
                        "   5.00 ± 0.00 | chosen on validation |")
    assert lines[3].startswith("| digits_fashion20 | ties | 10.0 | 2 |  70.50 ± 0.71 |  76.00 ± 1.41 |")
    assert lines[3].endswith(" |  |") and lines[4] == "| digits_fashion20 | ties | IM+CA | 2 |  70.00 ± 1.41 |  66.00 ± 1.41 | - | - |  |"
    assert lines[-1] == "digits_fashion20 / ties: align.lam=0.1 chosen on validation Ā; its test Ā  67.00 ± 1.41"


def test_the_optuna_search_is_confirmed_on_three_seeds_with_its_cache():
    sweep = load_sweep(REPO / "sweeps" / "lambda_optuna.yaml")
    assert sweep.cfg.space == {"align.lam": {"loguniform": [0.001, 100.0]}} and sweep.base_tree["seed"] == 1993
    confirm = confirmation(sweep, {"align.lam": 0.3}, "lambda_optuna-confirm", "/storage")
    assert confirm.cfg.space == {"seed": {"grid": [1993, 1994, 1995]}} and confirm.cfg.search == "basic"
    assert confirm.base_tree["align"]["lam"] == 0.3 and confirm.cfg.cache_location("/other") == sweep.cfg.cache_location("/storage")
    assert not confirm.cfg.confirm_space and confirm.cfg.metric == "val_avg_acc"


def test_lambda_sweep_spans_a_log_grid_and_zero_over_three_seeds():
    sweep = load_sweep(REPO / "sweeps" / "lambda.yaml")
    lams = sweep.cfg.align_space["align.lam"]["grid"]
    assert lams[0] == 0.0 and min(lams[1:]) == 0.001 and max(lams) == 100.0
    assert sweep.cfg.space == {"seed": {"grid": [1993, 1994, 1995]}} and sweep.cfg.metric == "val_avg_acc"
    assert len(sweep.cfg.variants()) == len(lams) and sweep.base_tree["data"]["val_fraction"] > 0


def test_no_reference_row_when_the_key_changes_im_ca(tmp_path):
    # a trajectory key (here: its IM+CA differs between the values of one seed) has no single IM+CA reference
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "exp")
    log_run(tracker, 0.1, 1993, val=70.0, test=66.0, ca=(69.0, 65.0))
    log_run(tracker, 10.0, 1993, val=71.0, test=75.0, ca=(60.0, 61.0))
    (by_value,) = collect_values(tracker, "align.lam").values()
    assert set(by_value) == {"0.1", "10.0"}
