"""The method's math as plain torch functions: task vectors and merge rules, Gaussian bank, LCA, metrics."""
from imlca.core.gaussian_bank import GaussianBank
from imlca.core.lca import align_heads, lca_loss
from imlca.core.merging import (
    apply_task_vector,
    incremental_merge,
    lora_delta,
    max_abs,
    mean,
    merge,
    task_vector,
    ties,
)
from imlca.core.metrics import (
    average_incremental_accuracy,
    forgetting,
    forgetting_authors,
    last_accuracy,
    summary,
    task_accuracies,
)

__all__ = [
    "GaussianBank",
    "align_heads",
    "apply_task_vector",
    "average_incremental_accuracy",
    "forgetting",
    "forgetting_authors",
    "incremental_merge",
    "last_accuracy",
    "lca_loss",
    "lora_delta",
    "max_abs",
    "mean",
    "merge",
    "summary",
    "task_accuracies",
    "task_vector",
    "ties",
]
