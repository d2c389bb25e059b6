"""Kill the actors' processes on a real local Ray cluster: the run finishes with the undisturbed numbers."""
import os
import signal
import threading
import time

import psutil
import pytest

from imlca.config import load_config
from imlca.orchestration.ray_step import run_distributed

from conftest import TINY, tiny_family_overrides


def actor_pids(name: str) -> list[int]:
    """Ray titles an actor's process `ray::<Class>` (`ray::<Class>.<method>` while it runs a call). Only this
    test's cluster (its raylet is a child of this process): other Ray clusters on the machine run actors too."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
        except psutil.NoSuchProcess:  # ended since the listing
            continue
        if cmd.startswith(f"ray::{name}"):
            pids.append(proc.pid)
    return pids


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(timeout=30) if psutil.pid_exists(pid) else None


@pytest.fixture
def undisturbed(family_run):
    return family_run  # (family, the session's in-process run of the same config)


def test_task_worker_killed_mid_task(ray_cluster, undisturbed, tmp_path):
    killed, seen_after = [], []

    def shoot_during_next_task():
        deadline = time.time() + 30
        while time.time() < deadline:
            busy = actor_pids("TaskWorker.train")  # the worker is inside task 1's training call
            if busy:
                killed.append(busy[0])
                kill(busy[0])
                return
            time.sleep(0.05)

    def on_task(report):
        if report["task"] == 0:
            threading.Thread(target=shoot_during_next_task, daemon=True).start()
        else:
            seen_after.extend(actor_pids("TaskWorker"))

    family, reference = undisturbed
    result = run_distributed(load_config(TINY, tiny_family_overrides(family)), on_task=on_task,
                             checkpoint_dir=tmp_path)
    assert killed, "the TaskWorker was never caught mid-task"
    assert seen_after and killed[0] not in seen_after  # a new worker process finished the run
    assert result.acc == reference.acc


def test_merge_actor_killed_between_tasks(ray_cluster, undisturbed, tmp_path):
    killed = []

    def on_task(report):
        if report["task"] == 0:
            (pid,) = actor_pids("CentralActor")
            killed.append(pid)
            kill(pid)

    family, reference = undisturbed
    result = run_distributed(load_config(TINY, tiny_family_overrides(family)), on_task=on_task,
                             checkpoint_dir=tmp_path)
    assert killed
    assert result.acc == reference.acc
    assert [r["avg_acc"] for r in result.reports] == [r["avg_acc"] for r in reference.reports]
