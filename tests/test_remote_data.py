"""Benchmarks in an object store (moto's S3 server on loopback, tests/conftest.py `s3`): `imlca data push`, the
per-node copy (`imlca.data.remote`: one download per node under a lock, verified, resumable) and each bad input
stopping with one line. The datasets are ImageFolder trees of real PNG files written from the synthetic images."""
from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cluster_nodes import s3_server, write_imagefolder
from conftest import REPO
from servers import clean_env, free_port

PULL_TIMEOUT_S = 120


def imlca(*args: str, env: dict[str, str], prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    argv = [*(prefix or []), sys.executable, "-m", "imlca", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=PULL_TIMEOUT_S, cwd=REPO)


def cli_env(s3, **extra: str) -> dict[str, str]:
    return clean_env(PYTHONPATH=str(REPO / "platform"), **{**s3.env, **extra})


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, s3):
    """A 6-class ImageFolder (40 + 20 PNGs per class) pushed to a fresh prefix; → (local root, data root URI)."""
    local = write_imagefolder(tmp_path_factory.mktemp("folder"), 40, 20)
    uri = f"s3://{s3.bucket}/data-{secrets.token_hex(4)}"
    done = imlca("data", "push", "imagefolder", "--root", str(local), "--to", uri, env=cli_env(s3))
    assert done.returncode == 0 and done.stdout.startswith("pushed imagefolder: 360 files"), done.stderr
    return local, uri


def only_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in done.stderr
    return line


def test_pushed_benchmark_loads_from_s3_as_from_local_disk_and_is_downloaded_once(pushed, s3, tmp_path,
                                                                                  monkeypatch):
    from imlca.config import DataConfig
    from imlca.data import load_benchmark
    from imlca.data.remote import materialise

    local, uri = pushed
    prefix = uri.split("/", 3)[3]
    assert f"{prefix}/imlca-manifest.json" in s3.keys(prefix)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    before = len(s3.gets(f"{prefix}/"))
    cfg = dict(benchmark="imagefolder", task_sizes=[2, 2, 2], cache_dir=str(tmp_path))
    remote = load_benchmark(DataConfig(root=uri, **cfg), seed=1993)
    fetched = s3.gets(f"{prefix}/")[before:]
    assert sorted(fetched) == sorted([f"{prefix}/imlca-manifest.json"] + [
        f"{prefix}/{p.relative_to(local).as_posix()}" for p in local.rglob("*.png")])  # each file once
    on_disk = load_benchmark(DataConfig(root=str(local), **cfg), seed=1993)
    for part in ("train", "test"):
        a, b = getattr(remote, part), getattr(on_disk, part)
        assert np.array_equal(a.labels, b.labels) and len(a.labels) == {"train": 240, "test": 120}[part]
        for i in (0, len(a.labels) - 1):
            assert np.array_equal(np.asarray(a.load(i)), np.asarray(b.load(i)))
    # a second trial on this node: the manifest only, no data
    assert materialise(uri, "imagefolder", str(tmp_path))[1] == 0
    assert s3.gets(f"{prefix}/")[before + len(fetched):] == [f"{prefix}/imlca-manifest.json"]


def test_two_processes_starting_together_download_once(pushed, s3, tmp_path):
    _, uri = pushed
    argv = [sys.executable, "-m", "imlca", "data", "pull", "imagefolder", "--from", uri, "--cache-dir", str(tmp_path)]
    procs = [subprocess.Popen(argv, env=cli_env(s3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=PULL_TIMEOUT_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    downloaded = sorted(out.split(": ", 1)[1].split(" downloaded")[0] for out, _ in outputs)
    assert downloaded[0] == "0 bytes" and downloaded[1] != "0 bytes", outputs  # one fetched, the other waited


def test_a_killed_download_resumes_without_fetching_verified_files_again(tmp_path_factory, s3, tmp_path):
    local = write_imagefolder(tmp_path_factory.mktemp("big"), 100, 20)  # 720 files: seconds to fetch
    uri = f"s3://{s3.bucket}/resume-{secrets.token_hex(4)}"
    assert imlca("data", "push", "imagefolder", "--root", str(local), "--to", uri, env=cli_env(s3)).returncode == 0
    prefix = uri.split("/", 3)[3]
    argv = [sys.executable, "-m", "imlca", "data", "pull", "imagefolder", "--from", uri, "--cache-dir", str(tmp_path)]
    proc = subprocess.Popen(argv, env=cli_env(s3), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = None
    deadline = time.monotonic() + PULL_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list((tmp_path / "data").glob("*.verified"))
        if logs and len(logs[0].read_text().splitlines()) >= 50:
            log = logs[0]
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert log is not None, "the download ended before 50 files were verified"
    assert not list((tmp_path / "data").glob("*.done")), "the kill came after the download completed"
    verified = {line.split(" ", 1)[1] for line in log.read_text().splitlines() if len(line.split(" ")) == 2}
    assert 50 <= len(verified) < 720
    gets_before = len(s3.gets(f"{prefix}/"))

    done = imlca("data", "pull", "imagefolder", "--from", uri, "--cache-dir", str(tmp_path), env=cli_env(s3))
    assert done.returncode == 0, done.stderr
    refetched = {key.split("/", 1)[1] for key in s3.gets(f"{prefix}/")[gets_before:]} - {"imlca-manifest.json"}
    assert refetched == set(_names(local)) - verified  # only what the killed run had not verified
    copy = log.with_suffix("")  # the local data root: imagefolder reads the root itself
    assert sorted(_names(copy)) == sorted(_names(local))
    assert all((copy / n).read_bytes() == (local / n).read_bytes() for n in _names(local))
    assert not log.with_suffix(".partial").exists()


def _names(root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


# ---------------------------------------------------------------- bad input: one line, nothing left to read

def assert_nothing_readable(cache: Path) -> None:
    """No completed copy a later trial would read (files verified so far may stay, for a resume)."""
    assert not list((cache / "data").glob("*.done")) and not list((cache / "data").glob("*.partial"))


def test_an_unreachable_store_stops_with_one_line(tmp_path, s3):
    env = cli_env(s3, AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    line = only_error_line(imlca("data", "pull", "imagefolder", "--from", f"s3://{s3.bucket}/x", "--cache-dir",
                                 str(tmp_path), env=env))
    assert line.startswith("error: cannot reach the object store holding s3://") and "AWS_ENDPOINT_URL" in line
    assert_nothing_readable(tmp_path)


def test_a_missing_bucket_and_a_prefix_without_manifest_stop_with_one_line(tmp_path, s3):
    line = only_error_line(imlca("data", "pull", "imagefolder", "--from", "s3://no-such-bucket/data",
                                 "--cache-dir", str(tmp_path), env=cli_env(s3)))
    assert line == "error: bucket 'no-such-bucket' of s3://no-such-bucket/data does not exist; create it, or fix " \
                   "data.root / IMLCA_DATA"
    line = only_error_line(imlca("data", "pull", "imagefolder", "--from", f"s3://{s3.bucket}/empty",
                                 "--cache-dir", str(tmp_path), env=cli_env(s3)))
    assert line == (f"error: no benchmark manifest at s3://{s3.bucket}/empty/imlca-manifest.json; upload it with "
                    "`imlca data push BENCHMARK --root LOCAL --to URI`")
    assert_nothing_readable(tmp_path)


@pytest.mark.parametrize("text", [b"not json", b'{"format": 1}', b'{"format": 2, "files": {}}',
                                  b'{"format": 1, "files": {"a.png": [3]}}'])
def test_a_manifest_that_is_not_ours_stops_with_one_line(s3, tmp_path, text):
    s3.client().put_object(Bucket=s3.bucket, Key="foreign/imlca-manifest.json", Body=text)
    line = only_error_line(imlca("data", "pull", "imagefolder", "--from", f"s3://{s3.bucket}/foreign",
                                 "--cache-dir", str(tmp_path), env=cli_env(s3)))
    assert line == (f"error: s3://{s3.bucket}/foreign/imlca-manifest.json is not an imlca manifest (format 1); "
                    "upload it with `imlca data push BENCHMARK --root LOCAL --to URI`")
    assert_nothing_readable(tmp_path)


def test_missing_and_refused_credentials_stop_with_one_line(tmp_path_factory, tmp_path):
    with s3_server(tmp_path_factory.mktemp("s3-auth"), "guarded", check_credentials=True) as guarded:
        env = cli_env(guarded, HOME=str(tmp_path))  # no ~/.aws/credentials either
        anonymous = {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        pull = ("data", "pull", "imagefolder", "--from", "s3://guarded/data", "--cache-dir", str(tmp_path))
        line = only_error_line(imlca(*pull, env=anonymous))
        assert line.startswith("error: cannot read s3://guarded/data and this node has no object-store credentials")
        assert "AWS_ACCESS_KEY_ID" in line and "instance profile" in line
        line = only_error_line(imlca(*pull, env=env))  # moto's dummies: unknown to its IAM, so refused
        assert line.startswith("error: access to s3://guarded/data denied (") and "ACCESS_DENIED" in line
        assert "give this node's credentials read access" in line
    assert_nothing_readable(tmp_path)


def test_a_file_that_does_not_match_the_manifest_stops_with_one_line(tmp_path_factory, s3, tmp_path):
    local = write_imagefolder(tmp_path_factory.mktemp("tampered"), 2, 1)
    uri = f"s3://{s3.bucket}/tampered-{secrets.token_hex(4)}"
    assert imlca("data", "push", "imagefolder", "--root", str(local), "--to", uri, env=cli_env(s3)).returncode == 0
    key = f"{uri.split('/', 3)[3]}/train/class3/0007.png"
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=b"not the pushed image")
    line = only_error_line(imlca("data", "pull", "imagefolder", "--from", uri, "--cache-dir", str(tmp_path),
                                 env=cli_env(s3)))
    assert line.startswith(f"error: {uri}/train/class3/0007.png does not match its manifest entry (20 bytes")
    assert line.endswith("the bucket copy changed or is corrupt: upload it with `imlca data push BENCHMARK "
                         "--root LOCAL --to URI`")
    assert_nothing_readable(tmp_path)
    assert not list((tmp_path / "data").glob("*/train/class3/0007.png"))


@pytest.mark.parametrize("tmpfs, mid_download", [("size=64k", False),  # too small for the data: refused up front
                                                 ("size=16m,nr_inodes=40", True)])  # out of inodes after ~25 files
def test_a_full_disk_stops_with_one_line_and_leaves_no_readable_copy(pushed, s3, tmp_path, tmpfs, mid_download):
    # A real small file system, in a mount namespace of its own (root only), as the node's cache disk.
    _, uri = pushed
    cache = tmp_path / "cache"
    cache.mkdir()
    pull = [sys.executable, "-m", "imlca", "data", "pull", "imagefolder", "--from", uri, "--cache-dir", str(cache)]
    script = (f"mount -t tmpfs -o {tmpfs} small {shlex.quote(str(cache))} && {shlex.join(pull)}; rc=$?; "
              f"echo listing; ls -a {shlex.quote(str(cache / 'data'))}; exit $rc")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=cli_env(s3), capture_output=True, text=True, timeout=PULL_TIMEOUT_S)
    line = only_error_line(done)
    assert line.startswith(f"error: no space left on the device holding {cache}/data/")
    assert line.endswith("free space there or set data.cache_dir (or IMLCA_CACHE) to a folder on a larger disk")
    listing = done.stdout.split("listing\n", 1)[1].split()
    assert not [n for n in listing if n.endswith((".done", ".partial"))], listing
    assert any(n.endswith(".verified") for n in listing) == mid_download, listing  # files fetched before it


def test_a_run_on_a_prefix_without_manifest_stops_before_training(s3, tmp_path):
    # the preflight (driver side) reads the manifest only; here it is missing
    line = only_error_line(imlca("run", "sweeps/tiny.yaml", "--set", "data.benchmark=imagefolder",
                                 "--set", f"data.root=s3://{s3.bucket}/nothing-here", "--set",
                                 "data.task_sizes=[2,2,2]", "--set", f"data.cache_dir={tmp_path}", env=cli_env(s3)))
    assert line == (f"error: no benchmark manifest at s3://{s3.bucket}/nothing-here/imlca-manifest.json; upload it "
                    "with `imlca data push BENCHMARK --root LOCAL --to URI`")
    assert not (tmp_path / "data").exists()
