"""Sweep storage (orchestration/storage.py): URIs go to Tune untouched, folders are resolved where the sweep is
submitted, a node-local folder is refused on a cluster of several nodes, and the small files the driver keeps
beside Tune's state are read and written on a real S3-compatible server (moto) as on a local disk."""
from __future__ import annotations

import os

import pytest

from imlca.errors import ConfigError
from imlca.orchestration.storage import (check_reachable_by_all_nodes, filesystem_type, folders, read_text,
                                         storage_root, write_text)


def test_uris_are_handed_on_untouched_and_folders_resolved_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMLCA_STORAGE", raising=False)
    assert storage_root("s3://bucket/imlca/ray_results/") == "s3://bucket/imlca/ray_results"
    assert storage_root("gs://bucket/x") == "gs://bucket/x"
    assert storage_root("results") == str(tmp_path / "results")
    assert storage_root(None) == str(tmp_path / "ray_results")  # the default
    monkeypatch.setenv("IMLCA_STORAGE", "s3://from-env/sweeps")
    assert storage_root(None) == "s3://from-env/sweeps"  # what cluster configs set
    assert storage_root("/mnt/shared/x") == "/mnt/shared/x"  # the sweep file's own value wins


def test_a_node_local_folder_is_refused_on_several_nodes(tmp_path):
    folder = str(tmp_path / "ray_results")
    check_reachable_by_all_nodes(folder, nodes=1, autoscaling=False)  # one node: as it always worked
    check_reachable_by_all_nodes("s3://bucket/x", nodes=3, autoscaling=True)
    with pytest.raises(ConfigError) as refused:
        check_reachable_by_all_nodes(folder, nodes=2, autoscaling=False)
    message = str(refused.value)
    assert message.startswith("config key 'storage_path': ") and "\n" not in message
    assert f"{folder} is on this node's disk ({filesystem_type(folder)})" in message
    assert "s3://" in message and "IMLCA_STORAGE" in message
    with pytest.raises(ConfigError, match=r"nodes added on demand \(IMLCA_AUTOSCALING=1\)"):
        check_reachable_by_all_nodes(folder, nodes=1, autoscaling=True)


def test_filesystem_type_is_the_nearest_mount():
    assert filesystem_type("/dev/shm/imlca/not/yet/created") == "tmpfs"
    assert filesystem_type("/proc/self") == "proc"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_state_files_and_experiment_folders(where, tmp_path, request, monkeypatch):
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        for key, value in s3.env.items():  # test credentials, in this test's environment only
            monkeypatch.setenv(key, value)
        root = f"s3://{s3.bucket}/state-{os.getpid()}"
    else:
        root = str(tmp_path / "ray_results")
    assert read_text(f"{root}/smoke-1/imlca_mlflow.json") is None and folders(root, "smoke-") == []
    write_text(f"{root}/smoke-20260101-000000/imlca_mlflow.json", '{"parent_run_id": "abc"}')
    write_text(f"{root}/smoke-20250101-000000/x.json", "{}")
    write_text(f"{root}/other-20270101-000000/x.json", "{}")
    assert read_text(f"{root}/smoke-20260101-000000/imlca_mlflow.json") == '{"parent_run_id": "abc"}'
    assert folders(root, "smoke-") == [f"{root}/smoke-20250101-000000", f"{root}/smoke-20260101-000000"]
    if where == "s3":
        assert f"state-{os.getpid()}/smoke-20260101-000000/imlca_mlflow.json" in s3.keys("state-")
