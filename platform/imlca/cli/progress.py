"""What `imlca run` shows while it trains: a tqdm bar over every task's epochs (only on a terminal: logs and pipes
get the plain per-task lines alone), and one summary line per finished task."""
from __future__ import annotations

import sys

from tqdm import tqdm


class RunProgress:
    """One bar of num_tasks × epochs steps; its text names the task and epoch and the epoch's training loss."""

    def __init__(self, num_tasks: int, epochs: int, enabled: bool | None = None):
        self.epochs = epochs
        show = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=num_tasks * epochs, unit="epoch", disable=not show, dynamic_ncols=True, leave=False)
        self.num_tasks = num_tasks

    def epoch(self, task: int, epoch: int, loss: float) -> None:
        self.bar.set_description(f"task {task + 1}/{self.num_tasks} epoch {epoch + 1}/{self.epochs}")
        self.bar.set_postfix(loss=f"{loss:.4f}")
        self.bar.update(1)

    def line(self, text: str) -> None:
        """Print above the bar (a plain print would tear it)."""
        tqdm.write(text, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


def task_summary(report: dict, methods: list[str]) -> str:
    """`task 2 done: train_loss 0.41 | IM A_t 61.2 Ā 70.3 | IM+LCA A_t 66.0 Ā 74.1`."""
    from imlca.tracking.figures import label

    parts = [f"task {report['task']} done: train_loss {report['train_loss']:.4f}"]
    parts += [f"{label(m)} A_t {report[f'{m}/A_t']:.2f} Ā {report[f'{m}/avg_acc']:.2f}" for m in methods]
    return " | ".join(parts)

