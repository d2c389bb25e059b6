"""A dataset bucket imlca does not trust (docs/security.md): its manifest names where `imlca data pull` and every
trial with `data.root=s3://...` write. Each hostile manifest below, served by the real S3 server on loopback
(tests/conftest.py `s3`), ends in one line and exit code 2, with nothing written outside the cache folder and
nothing a later trial would read inside it."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import pytest

from imlca.cli import main

ORIGINAL, EVIL = b"the user's own file", b"written by the bucket"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_benchmark(s3, objects: dict[str, bytes], files: dict) -> str:
    """`objects` (key under a fresh prefix → body) and a manifest listing `files`; → the data root URI."""
    prefix = f"hostile-{secrets.token_hex(4)}"
    client = s3.client()
    for key, body in objects.items():
        client.put_object(Bucket=s3.bucket, Key=f"{prefix}/{key}", Body=body)
    manifest = {"format": 1, "benchmark": "imagefolder", "files": files}
    client.put_object(Bucket=s3.bucket, Key=f"{prefix}/imlca-manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{s3.bucket}/{prefix}"


def pull(uri: str, cache: Path, s3, monkeypatch, capsys) -> str:
    """`imlca data pull` through the CLI's own `main`; → its one error line."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    code = main(["data", "pull", "imagefolder", "--from", uri, "--cache-dir", str(cache)])
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in captured.err
    return line


def case(name: str, victim: Path) -> tuple[dict[str, bytes], dict, str, str]:
    """(objects, manifest files, the entry the message names, what it says about it)."""
    evil = [len(EVIL), sha(EVIL)]
    escape = "../../../victim.txt"  # from <cache>/data/<key>/ (imagefolder reads the root itself) to the victim
    return {
        "absolute": ({str(victim).lstrip("/"): EVIL}, {str(victim): evil}, repr(str(victim)), "an absolute path"),
        "dot-dot": ({escape: EVIL}, {escape: evil}, repr(escape), "a name with an empty, '.' or '..' part"),
        "backslash": ({"..\\..\\..\\victim.txt": EVIL}, {"..\\..\\..\\victim.txt": evil},
                      repr("..\\..\\..\\victim.txt"), "a name with a backslash"),
        "wrong types": ({"train/a/0.png": EVIL}, {"train/a/0.png": ["77", None]}, repr("train/a/0.png"),
                        "is not [size in bytes >= 0, sha256 as 64 hex digits] (got ['77', None])"),
        "negative size": ({"train/a/0.png": EVIL}, {"train/a/0.png": [-1, sha(EVIL)]}, repr("train/a/0.png"),
                          "is not [size in bytes >= 0"),
        "file and folder": ({"train/a": EVIL, "train/a/0.png": EVIL}, {"train/a": evil, "train/a/0.png": evil},
                            repr("train/a"), "both a file and a folder (the manifest also lists 'train/a/0.png')"),
    }[name]


@pytest.mark.parametrize("name", ["absolute", "dot-dot", "backslash", "wrong types", "negative size",
                                  "file and folder"])
def test_a_hostile_manifest_is_refused_before_anything_is_written(name, s3, tmp_path, monkeypatch, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(ORIGINAL)
    objects, files, entry, problem = case(name, victim)
    uri = put_benchmark(s3, objects, files)
    line = pull(uri, tmp_path / "cache", s3, monkeypatch, capsys)
    assert line.startswith(f"error: {uri}/imlca-manifest.json is refused: its entry {entry} is "), line
    assert problem in line and line.endswith("nothing was written; upload it with `imlca data push BENCHMARK "
                                             "--root LOCAL --to URI`")
    assert victim.read_bytes() == ORIGINAL
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"]  # not even the cache folder


def test_an_object_larger_than_its_entry_is_not_read_past_it(s3, tmp_path, monkeypatch, capsys):
    declared = b"12345"
    uri = put_benchmark(s3, {"train/a/0.png": declared + os.urandom(1 << 21)},
                        {"train/a/0.png": [len(declared), sha(declared)]})
    cache = tmp_path / "cache"
    line = pull(uri, cache, s3, monkeypatch, capsys)
    assert line.startswith(f"error: {uri}/train/a/0.png is larger than its manifest entry (5 bytes; the download "
                           "stopped at 6)"), line
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert not [p for p in written if p.suffix in (".done", ".png")] and max(p.stat().st_size for p in written) < 100


def test_a_link_in_the_cache_that_points_out_is_not_written_through(s3, tmp_path, monkeypatch, capsys):
    image = b"a real image"
    uri = put_benchmark(s3, {"train/a/0.png": image}, {"train/a/0.png": [len(image), sha(image)]})
    outside = tmp_path / "outside"
    outside.mkdir()
    cache = tmp_path / "cache"
    local = cache / "data" / hashlib.sha256(uri.encode()).hexdigest()[:16]  # remote.materialise's folder
    local.mkdir(parents=True)
    (local / "train").symlink_to(outside)
    line = pull(uri, cache, s3, monkeypatch, capsys)
    assert line.startswith(f"error: {uri}/imlca-manifest.json is refused: its entry 'train/a/0.png' is a path that "
                           "resolves outside the local copy"), line
    assert list(outside.iterdir()) == []
