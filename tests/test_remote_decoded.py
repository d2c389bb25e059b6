"""The decoded-image cache in the bucket (moto's S3 server on loopback, tests/conftest.py `s3`): `imlca data push
--decoded`, a node fetching it instead of the JPEGs (same pixels as decoding them, each file once, verified), the
fallback to the JPEGs with one line, and each bad input stopping with one line and no readable copy.
The cluster side (a worker that trains from a copy it fetched) is in tests/test_cluster_storage.py."""
from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
from pathlib import Path

import numpy as np
import pytest

from cluster_nodes import write_imagefolder
from test_remote_data import assert_nothing_readable, cli_env, imlca, only_error_line

TINY_16 = "tiny.yaml"  # the bundled tiny config: image_size 16, so the cache stores 16-bilinear


def data_config(uri: str, cache: Path, **extra):
    from imlca.config import DataConfig

    return DataConfig(benchmark="imagefolder", root=uri, task_sizes=[2, 2, 2], image_size=16, pipeline="cached",
                      remote_decoded=True, cache_dir=str(cache), **extra)


def push_both(s3, local: Path, cache: Path) -> str:
    """The JPEGs (here PNGs) of `local` and their decoded copy at 16 px pushed to a fresh prefix; → its URI."""
    from imlca.data.object_store import push
    from imlca.data.remote_decoded import push_decoded

    uri = f"s3://{s3.bucket}/dec-{secrets.token_hex(4)}"
    push("imagefolder", local, uri)
    push_decoded(data_config(uri, cache), local, uri, 2)
    return uri


@pytest.fixture(scope="module")
def s3_env(s3):
    with pytest.MonkeyPatch.context() as env:
        for key, value in s3.env.items():
            env.setenv(key, value)
        yield s3


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("dec-folder"), 4, 2)  # 6 classes, 24 + 12 PNGs


@pytest.fixture(scope="module")
def pushed(s3, tmp_path_factory):
    """A 6-class ImageFolder (40 + 20 PNGs per class) and its decoded copy at 16 px, pushed with the CLI."""
    local = write_imagefolder(tmp_path_factory.mktemp("dec-pushed"), 40, 20)
    uri = f"s3://{s3.bucket}/dec-{secrets.token_hex(4)}"
    done = imlca("data", "push", "imagefolder", "--root", str(local), "--to", uri, "--decoded", "--config",
                 TINY_16, env=cli_env(s3, IMLCA_CACHE=str(local.parent / "push-cache")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("pushed the decoded images of imagefolder (16 px, bilinear): 8 "
                                                  "files, ") and f"{uri}/imlca-decoded/16-bilinear in" in done.stdout
    return local, uri


def test_a_node_fetches_the_decoded_copy_once_and_sees_the_pixels_the_jpegs_give(pushed, s3_env, tmp_path):
    from imlca.data import load_benchmark
    from imlca.data.image_cache import open_cache

    local, uri = pushed
    prefix = uri.split("/", 3)[3]
    before = len(s3_env.gets(f"{prefix}/"))
    cfg = data_config(uri, tmp_path / "node", val_fraction=0.25, train_per_class=30)
    fetched = load_benchmark(cfg, seed=1993)
    gets = s3_env.gets(f"{prefix}/")[before:]
    decoded = f"{prefix}/imlca-decoded/16-bilinear"
    assert sorted(gets) == sorted([f"{prefix}/imlca-manifest.json", f"{decoded}/imlca-manifest.json"] + [
        f"{decoded}/{part}/{name}" for part in ("train", "test")
        for name in ("pixels.u8", "index.npy", "meta.json", "labels.npy")])  # no PNG, each file once
    on_disk = load_benchmark(dataclasses.replace(cfg, root=str(local), remote_decoded=False), seed=1993)
    assert (len(fetched.train.labels) + len(fetched.val.labels), len(fetched.test.labels)) == (180, 120)
    for part in ("train", "val", "test"):  # the capped, validation-split views index the fetched memory map
        a, b = getattr(fetched, part), getattr(on_disk, part)
        assert np.array_equal(a.labels, b.labels) and len(a.labels) > 0
        view = open_cache(a, 16, tmp_path / "images")
        assert view.folder.is_relative_to(tmp_path / "node") and not (tmp_path / "images").exists()  # no copy
        rows = np.arange(len(a.labels))
        assert np.array_equal(view.batch(rows)[0], open_cache(b, 16, tmp_path / "built").batch(rows)[0])
    # a second trial on this node: the two manifests, no data
    load_benchmark(cfg, seed=1993)
    assert sorted(s3_env.gets(f"{prefix}/")[before + len(gets):]) == [f"{decoded}/imlca-manifest.json",
                                                                       f"{prefix}/imlca-manifest.json"]


def test_without_a_decoded_copy_at_its_resolution_a_node_reads_the_jpegs_and_says_so(pushed, s3, tmp_path):
    _, uri = pushed
    config = tmp_path / "24px.yaml"
    config.write_text("data: {image_size: 24}\n")
    done = imlca("data", "pull", "imagefolder", "--from", uri, "--decoded", "--config", str(config), "--cache-dir",
                 str(tmp_path), env=cli_env(s3))
    assert done.returncode == 0, done.stderr
    first, copied = done.stdout.splitlines()
    assert first == (f"imagefolder: reading the JPEGs of {uri}: its decoded copies are for 16-bilinear "
                     "(size-interpolation), not the 24-bilinear this config needs; `imlca data push imagefolder "
                     "--root LOCAL --to URI --decoded --config THIS_CONFIG` stores one")
    assert copied.startswith("imagefolder at ") and " 0 bytes" not in copied


def test_a_bucket_without_decoded_copy_falls_back_with_one_line(folder, s3_env, tmp_path, capsys):
    from imlca.data import load_benchmark
    from imlca.data.object_store import push

    uri = f"s3://{s3_env.bucket}/jpegs-{secrets.token_hex(4)}"
    push("imagefolder", folder, uri)
    loaded = load_benchmark(data_config(uri, tmp_path), seed=1)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"imagefolder: reading the JPEGs of {uri}: it holds no decoded copy; `imlca data push imagefolder --root "
        "LOCAL --to URI --decoded --config THIS_CONFIG` stores one")
    assert len(loaded.train.labels) == 24 and type(loaded.train.images).__name__ == "FileImageSet"


def _rewrite_manifest(s3, key: str, **changes) -> None:
    client = s3.client()
    manifest = json.loads(client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
    client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps({**manifest, **changes}).encode())


def _copy_prefix(s3, source: str, target: str) -> None:
    client = s3.client()
    for item in client.list_objects_v2(Bucket=s3.bucket, Prefix=source)["Contents"]:
        client.copy_object(Bucket=s3.bucket, Key=target + item["Key"][len(source):],
                           CopySource={"Bucket": s3.bucket, "Key": item["Key"]})


def _stale(s3, uri, folder, tmp_path):  # the JPEGs pushed again after one changed: the decoded copy predates them
    from imlca.data.object_store import push

    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    first, other = (sorted((changed / "train" / f"class{k}").glob("*.png"))[0] for k in (0, 1))
    first.write_bytes(other.read_bytes())
    push("imagefolder", changed, uri)
    return "is stale: it was decoded from other JPEGs than"


def _other_resolution(s3, uri, folder, tmp_path):  # a 12-px copy moved into the 16-px folder
    from imlca.data.remote_decoded import push_decoded

    push_decoded(dataclasses.replace(data_config(uri, tmp_path / "c"), image_size=12), folder, uri, 2)
    prefix = uri.split("/", 3)[3] + "/imlca-decoded/"
    _copy_prefix(s3, prefix + "12-bilinear/", prefix + "16-bilinear/")
    return "was made for 12 px bilinear, not the 16 px bilinear its folder says"


def _other_resolution_inside(s3, uri, folder, tmp_path):  # a manifest claiming 16 px over a 12-px copy's files
    _other_resolution(s3, uri, folder, tmp_path)
    _rewrite_manifest(s3, uri.split("/", 3)[3] + "/imlca-decoded/16-bilinear/imlca-manifest.json", size=16)
    return "train/ was made for 12 px bilinear (layout 1), not the 16 px bilinear (layout 1) its manifest says"


def _other_benchmark(s3, uri, folder, tmp_path):
    _rewrite_manifest(s3, uri.split("/", 3)[3] + "/imlca-decoded/16-bilinear/imlca-manifest.json", benchmark="cub")
    return "was made for benchmark 'cub', not 'imagefolder'"


def _partial_upload(s3, uri, folder, tmp_path):  # the manifest copied up before the last data file
    s3.client().delete_object(Bucket=s3.bucket, Key=uri.split("/", 3)[3] + "/imlca-decoded/16-bilinear/test/pixels.u8")
    return "/imlca-decoded/16-bilinear: "


@pytest.mark.parametrize("spoil", [_stale, _other_resolution, _other_resolution_inside, _other_benchmark,
                                   _partial_upload])
def test_a_bad_decoded_copy_stops_with_one_line_and_leaves_nothing_readable(folder, s3_env, tmp_path, spoil):
    uri = push_both(s3_env, folder, tmp_path / "push-cache")
    expected = spoil(s3_env, uri, folder, tmp_path)
    done = imlca("data", "pull", "imagefolder", "--from", uri, "--decoded", "--config", TINY_16, "--cache-dir",
                 str(tmp_path / "node"), env=cli_env(s3_env))
    line = only_error_line(done)
    assert expected in line, line
    assert line.endswith("; push it again with `imlca data push imagefolder --root LOCAL --to URI --decoded`, or set "
                         "data.remote_decoded: false"), line
    assert_nothing_readable(tmp_path / "node")


def test_remote_decoded_needs_the_cached_pipeline_and_a_bucket_root(folder):
    from imlca.config import DataConfig
    from imlca.data import load_benchmark
    from imlca.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        DataConfig(benchmark="imagefolder", remote_decoded=True)
    assert str(err.value) == ("config key 'remote_decoded': the decoded copy feeds the cached pipeline only; set "
                              "data.pipeline: cached, or data.remote_decoded: false")
    with pytest.raises(ConfigError) as err:
        load_benchmark(data_config(str(folder), folder.parent / "never"), seed=1)
    assert str(err.value) == (f"config key 'data.remote_decoded': fetches decoded images from an s3:// or gs:// data "
                              f"root, and benchmark 'imagefolder' is at {folder}; set data.root (or IMLCA_DATA) to "
                              "the bucket's data root, or data.remote_decoded: false")
    assert not (folder.parent / "never").exists()
