"""Ray actors. Each wraps an engine object and calls it; none holds math of its own.

TaskWorker (GPU or CPU): the run's family worker (engine/family.py): trains one task from what the centre holds,
returns the trained weights + the new classes' sufficient statistics; evaluates head sets.
CentralActor (central, light): the family's central state (IM: θ0, running merged adapter, Gaussian bank, heads;
SLCA: the backbone, bank, trained and aligned heads); integrates once per task id, and writes a task's checkpoint
tensors (a thread) while the TaskWorker evaluates the task.

Both are built empty and pointed at a run by `configure(run_id, ...)`, so that one process serves run after run
(`worker_pool.py`: a sweep's trials reuse them and skip importing torch, timm and peft again). A run's state lives
only in what `configure` builds; a new run id drops it first. Ray restarts a killed actor empty (its constructor
takes no run): every call then raises a `LostActorError`, and the driver configures it again and re-runs the task.
"""
from __future__ import annotations

import gc
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

import ray
import torch

from imlca.plugins import worker_config
from imlca.orchestration.wire import (heads_to_numpy, heads_to_torch, output_from_wire, output_to_wire,
                                         to_numpy, to_torch)


CENTRAL = "CentralActor"


class LostActorError(RuntimeError):
    """An actor restarted since the driver configured it, so it lacks the run: configure it again, re-run the task."""


class LostCentralError(LostActorError):
    """The CentralActor restarted between a task's merge and its record, or has not been configured since."""


class LostWorkerError(LostActorError):
    """The TaskWorker restarted and has not been configured since."""




class Stopwatch:
    """When an actor computed for its run (train, evaluate; merge + align, record), as (start, end) intervals on
    the wall clock, time.time(), which every process on a node reads alike: the bench's `task_overhead` row takes
    the union of both actors' intervals inside each task's window on the driver (they overlap: the next task
    trains while the CentralActor records and checkpoints the last one)."""

    def __init__(self):
        self.intervals: list[tuple[float, float]] = []

    @contextmanager
    def busy(self):
        start = time.time()
        try:
            yield
        finally:
            self.intervals.append((start, time.time()))


@ray.remote
class TaskWorker:
    def __init__(self):
        from imlca.engine.runner import TaskRunner  # noqa: F401  torch, timm, peft, the data code: imported once
        # per process (the run's family worker is picked in `configure`)
        self.fresh_seed = torch.initial_seed()  # the global RNG's seed in a new process: every run starts from it
        self.run_id, self._runner, self.clock = None, None, Stopwatch()
        gc.freeze()  # the modules' objects are never garbage: each run's collection scans only what runs made

    def configure(self, run_id: str, cfg_tree: dict, threads: int) -> None:
        """Point this worker at run `run_id` (nothing to do when it already is): the last run's model, data and
        loaders are dropped, the global RNG and thread count set as in a new process, then the run's TaskRunner
        is built; so a reused worker computes bit for bit what a new one computes."""
        if run_id == self.run_id:
            return
        self.run_id, self._runner = None, None
        gc.collect()  # the last run's model and memory-mapped images go before the next run's are built
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        if "torch._dynamo" in sys.modules:  # `train.compile`: the last run's graphs and guards go too
            torch.compiler.reset()
        torch.manual_seed(self.fresh_seed)  # CPU and CUDA generators, as a new process has them
        torch.set_num_threads(max(1, threads))  # follow the CPUs this actor holds, not the node's core count
        from imlca.engine.family import worker_class

        cfg = worker_config(cfg_tree, "TaskWorker")
        self._runner, self.clock = worker_class(cfg)(cfg), Stopwatch()
        self.run_id = run_id

    @property
    def runner(self):
        if self._runner is None:
            raise LostWorkerError("the TaskWorker restarted and holds no run; the driver configures it again")
        return self._runner

    def pid(self) -> int:
        return os.getpid()

    def busy_intervals(self) -> list[tuple[float, float]]:
        return list(self.clock.intervals)

    def setup(self) -> tuple[dict, int, int]:
        """The weights before any task (IM: θ0 in the merge space), feature dim, number of tasks."""
        return to_numpy(self.runner.theta0()), self.runner.model.dim, self.runner.num_tasks

    def train(self, task: int, merged: dict) -> dict:
        with self.clock.busy():
            return output_to_wire(self.runner.train(task, to_torch(merged)))

    def train_from(self, task: int, merged_and_heads: tuple[dict, dict]) -> dict:
        """`train` from a CentralActor's `integrate` result, without a `merged` call to it (it may be recording or
        saving)."""
        return self.train(task, merged_and_heads[0])

    def evaluate(self, task: int, merged_and_heads: tuple[dict, dict]) -> dict[str, dict[str, list[float]]]:
        merged, heads = merged_and_heads
        with self.clock.busy():
            return self.runner.evaluate(task, to_torch(merged), heads_to_torch(heads))

    def robustness(self, merged_and_heads: tuple[dict, dict]) -> dict[str, float]:
        merged, heads = merged_and_heads
        return self.runner.robustness(to_torch(merged), heads_to_torch(heads))


@ray.remote
class CentralActor:
    def __init__(self):
        import imlca.engine.state  # noqa: F401  core only: no timm, peft or data loaders in this actor
        import torch._dynamo  # noqa: F401  torch.optim's first optimizer imports it (2.5 s here): at start-up,
        # beside the TaskWorker's imports, not inside the first alignment (task 1)
        from imlca.engine.allocator import return_large_blocks

        return_large_blocks()  # this actor only aligns: freed per-class temporaries leave its RSS

        self.run_id, self._state, self.checkpoint_dir, self.clock = None, None, None, Stopwatch()
        # a task's checkpoint tensors, written by this thread from the task's integration on (while the TaskWorker
        # evaluates it): `save` then only adds the accuracies; (task, Future[WrittenTensors]) or None
        self.writer, self.writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imlca-checkpoint"), None
        gc.freeze()

    def configure(self, run_id: str, cfg_tree: dict, theta0: dict, dim: int, checkpoint_dir: str) -> None:
        """Point this actor at run `run_id` (nothing to do when it already is): a new state from the run's latest
        checkpoint, so after a restart nothing merged before the crash is merged twice or lost."""
        if run_id == self.run_id:
            return
        self._written(None)  # a write from the last run's state ends before that state goes
        self.run_id, self._state = None, None
        gc.collect()
        from imlca.engine.family import central_class

        cfg = worker_config(cfg_tree, CENTRAL)
        self._state = central_class(cfg)(cfg, to_torch(theta0), dim)
        self.checkpoint_dir, self.clock = Path(checkpoint_dir), Stopwatch()
        self._state.resume(self.checkpoint_dir)
        self.run_id = run_id

    @property
    def state(self):
        if self._state is None:
            raise LostCentralError("the CentralActor restarted and holds no run; the driver configures it again")
        return self._state

    def pid(self) -> int:
        return os.getpid()

    def busy_intervals(self) -> list[tuple[float, float]]:
        return list(self.clock.intervals)

    def tasks_done(self) -> int:
        """Tasks merged and evaluated: where a run continues."""
        return len(self.state.acc[self.state.methods[0]])

    def train_input(self) -> dict:
        """What the worker trains the next task from (IM: the merged adapter; SLCA: the backbone)."""
        return to_numpy(self.state.train_input())

    def integrate(self, wire: dict) -> tuple[dict, dict]:
        """Apply task `wire['task']` once; a repeated delivery returns the same state unchanged. A new task's
        checkpoint tensors start being written (they are final now)."""
        task = wire["task"]
        with self.clock.busy():
            new = task == self.state.tasks_merged
            merged, heads = self.state.integrate(output_from_wire(wire))
            if new:
                self._written(None)
                self.writing = (task, self.writer.submit(self.state.write_tensors, self.checkpoint_dir, task))
            return to_numpy(merged), heads_to_numpy(heads)

    def _written(self, task: int | None):
        """The tensors the writer thread wrote for `task` (None: another task's, or nothing), once it is idle."""
        writing, self.writing = self.writing, None
        if writing is None:
            return None
        if writing[0] != task:
            wait([writing[1]])  # idle before the state it reads changes; that write is not needed
            return None
        return writing[1].result()  # a failed write raises here, in the save that needed it

    def record(self, task: int, parts: dict[str, dict[str, list[float]]]) -> dict:
        if task >= self.state.tasks_merged:
            raise LostCentralError(f"task {task} was evaluated but its merge is not in this state (actor restarted)")
        with self.clock.busy():
            return self.state.record(task, parts)

    def save(self, task: int) -> None:
        """Checkpoint the state after `task`; refused when a restart lost that task (the driver re-runs it)."""
        if self.tasks_done() != task + 1:
            raise LostCentralError(f"task {task} is not in this state (actor restarted); it must run again")
        self.state.save(self.checkpoint_dir, task, self._written(task))

    def report(self, task: int) -> dict:
        return self.state.report(task)

    def snapshot(self) -> dict:
        """What the driver needs at the end: accuracy matrices, final weights and heads."""
        s = self.state
        weights, heads = s.final()
        return {"acc": s.acc, "merged": to_numpy(weights), "heads": heads_to_numpy(heads),
                "align_loss": s.align_loss, "train_loss": s.train_loss}
