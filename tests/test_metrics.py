"""Continual-learning metrics on hand-written accuracy matrices."""
import pytest
import torch

from imlca.core.metrics import (
    average_incremental_accuracy,
    forgetting,
    forgetting_authors,
    last_accuracy,
    summary,
    task_accuracies,
)

# A_0 = 80, A_1 = (90 + 70)/2 = 80, A_2 = (60 + 50 + 40)/3 = 50 → Ā = 210/3 = 70, last = 50
# forgetting: task 0: max(80, 90) − 60 = 30; task 1: 70 − 50 = 20 → 25
ROWS = [[80.0], [90.0, 70.0], [60.0, 50.0, 40.0]]
SQUARE = torch.tensor([[80.0, 99.0, 99.0], [90.0, 70.0, 99.0], [60.0, 50.0, 40.0]])  # upper triangle ignored


@pytest.mark.parametrize("acc", [ROWS, SQUARE], ids=["rows", "tensor"])
def test_three_tasks_by_hand(acc):
    assert average_incremental_accuracy(acc) == pytest.approx(70.0)
    assert last_accuracy(acc) == 50.0
    assert forgetting(acc) == pytest.approx(25.0)
    assert forgetting_authors(acc) == pytest.approx(25.0)  # no task ends above its best: the two agree
    result = summary(acc)
    assert result == pytest.approx({"avg_acc": 70.0, "last_acc": 50.0, "forgetting": 25.0,
                                    "forgetting_authors": 25.0})
    assert all(type(v) is float for v in result.values())


def test_two_tasks_with_fractions():
    # A_0 = 100, A_1 = 62.5 → Ā = 81.25; forgetting = 100 − 75 = 25
    acc = [[100.0], [75.0, 50.0]]
    assert summary(acc) == {"avg_acc": 81.25, "last_acc": 62.5, "forgetting": 25.0, "forgetting_authors": 25.0}


def test_single_task_has_no_forgetting():
    assert summary([[91.5]]) == {"avg_acc": 91.5, "last_acc": 91.5, "forgetting": 0.0, "forgetting_authors": 0.0}


def test_the_two_forgetting_definitions_differ_where_a_task_ends_at_its_best():
    # task 0 ends at 60, above its earlier 50 and 40; task 1 drops from 90 to 80
    acc = [[50.0], [40.0, 90.0], [60.0, 80.0, 70.0]]
    # ours, best before the last row: task 0: max(50, 40) − 60 = −10; task 1: 90 − 80 = 10 → 0
    assert forgetting(acc) == pytest.approx(0.0)
    # the authors', best over every row: task 0: max(50, 40, 60) − 60 = 0; task 1: max(90, 80) − 80 = 10 → 5
    assert forgetting_authors(acc) == pytest.approx(5.0)


@pytest.mark.parametrize(
    "acc, match",
    [
        ([], "empty"),
        ([[80.0], [90.0]], "row 1 has 1 entries, needs 2"),
        (torch.zeros(2, 3), "must be square"),
    ],
)
def test_malformed_matrices(acc, match):
    with pytest.raises(ValueError, match=match):
        average_incremental_accuracy(acc)


def test_task_accuracies_by_hand():
    targets = torch.tensor([0, 1, 2, 3, 4, 5])
    predictions = torch.tensor([0, 1, 0, 3, 3, 5])
    # [0, 2): 2/2 correct → 100; [2, 6): targets 2, 3, 4, 5 → 3 and 5 correct → 50
    result = task_accuracies(predictions, targets, [(0, 2), (2, 6)])
    assert result == [100.0, 50.0]
    assert all(type(v) is float for v in result)
    # [0, 3): 2 of 3 → 66.67
    assert task_accuracies(predictions, targets, [(0, 3)]) == [pytest.approx(200 / 3)]


def test_task_accuracies_errors():
    with pytest.raises(ValueError, match=r"no samples with targets in \[6, 8\)"):
        task_accuracies(torch.tensor([0, 1]), torch.tensor([0, 1]), [(0, 2), (6, 8)])
    with pytest.raises(ValueError, match="must be \\[N\\]"):
        task_accuracies(torch.tensor([0, 1, 2]), torch.tensor([0, 1]), [(0, 2)])


def test_sample_weighted_average_accuracy_is_pilots():
    """LAMDA-PILOT's Ā weighs each task's accuracy by its test samples: step 1 is (10·90 + 30·50) / 40 = 60, so
    Ā = (80 + 60) / 2 = 70 where the task-balanced Ā is (80 + 70) / 2 = 75; equal counts give the same number."""
    from imlca.core.metrics import average_incremental_accuracy_weighted, task_counts

    acc = [[80.0], [90.0, 50.0]]
    assert average_incremental_accuracy_weighted(acc, [10, 30]) == 70.0
    assert average_incremental_accuracy(acc) == 75.0
    assert average_incremental_accuracy_weighted(acc, [20, 20]) == 75.0
    with pytest.raises(ValueError, match="counts"):
        average_incremental_accuracy_weighted(acc, [10])
    assert task_counts(torch.tensor([0, 1, 1, 2, 3, 3, 3]), [(0, 2), (2, 4)]) == [3, 4]
