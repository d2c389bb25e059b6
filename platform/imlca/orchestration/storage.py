"""Where a sweep keeps its trial checkpoints and Tune state: a folder every node of the cluster can read.

`storage_path` is an object-store URI (`s3://bucket/prefix`, `gs://bucket/prefix`), handed to Tune untouched,
or a folder. A folder is resolved against the submitting working directory and is only good for one node, or
for a shared mount (NFS, EFS, Lustre, ...) that every node has at the same path. On a cluster with more than one
node, or one that can add nodes (IMLCA_AUTOSCALING=1), a node-local folder is refused before any trial starts:
Tune would fail at the first task checkpoint a worker node reports ("a local path on the head node is not
accessible by worker nodes"). S3 endpoints and credentials come from the environment (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, an instance profile, a service account), never from the sweep file.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs

from imlca.errors import ConfigError

DEFAULT = "ray_results"  # used when neither the sweep's storage_path nor $IMLCA_STORAGE is set
ENV = "IMLCA_STORAGE"  # cluster configs set it, so that one sweep file runs on a laptop and on a cluster
# File systems that other machines see too (/proc/mounts types); anything else is node-local.
SHARED_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs",
                      "fuse.gcsfuse", "fuse.s3fs", "fuse.mountpoint-s3", "fuse.juicefs", "fuse.ceph", "9p")


def is_uri(path: str) -> bool:
    """An object-store (or other remote) URI that Tune and pyarrow resolve themselves."""
    return "://" in path and not path.startswith("file://")


def storage_root(configured: str | None) -> str:
    """The storage root for Tune: a URI as given, a folder as an absolute path (from the submitter's cwd)."""
    path = configured or os.environ.get(ENV) or DEFAULT
    if is_uri(path):
        return path.rstrip("/")
    return str(Path(path.removeprefix("file://")).expanduser().resolve())


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def _filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(uri)


def read_text(uri: str) -> str | None:
    """The file's text, or None when it does not exist."""
    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as stream:
        return stream.read().decode()


def write_text(uri: str, text: str) -> None:
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def upload_file(local: Path, uri: str) -> None:
    """Copy a local file to `uri` (written whole, then visible: object stores have no partial objects)."""
    fs, path = _filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)


def download_file(uri: str, local: Path) -> bool:
    """Copy the file at `uri` to `local`; False when there is no such file."""
    fs, path = _filesystem(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return False
    pyarrow.fs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return True


def folders(root: str, prefix: str) -> list[str]:
    """Sub-folders of `root` whose names start with `prefix`, as full paths or URIs, sorted by name."""
    fs, path = _filesystem(root)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    names = sorted(f.base_name for f in found
                   if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith(prefix))
    return [join(root, name) for name in names]


def filesystem_type(folder: str) -> str:
    """The /proc/mounts type of the mount that holds `folder` (its nearest existing parent)."""
    path = Path(folder)
    while not path.exists():
        path = path.parent
    path = path.resolve()
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        mount = fields[1].replace("\\040", " ")
        inside = path == Path(mount) or Path(mount) in path.parents
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def check_reachable_by_all_nodes(root: str, nodes: int, autoscaling: bool) -> None:
    """Refuse a node-local folder on a cluster whose trials may run on other nodes than this one."""
    if is_uri(root) or (nodes <= 1 and not autoscaling):
        return
    kind = filesystem_type(root)
    if kind in SHARED_FILESYSTEMS:
        return
    where = f"{nodes} nodes" if nodes > 1 else "nodes added on demand (IMLCA_AUTOSCALING=1)"
    raise ConfigError("storage_path", f"{root} is on this node's disk ({kind}) but the Ray cluster has {where}; "
                      f"give an s3:// or gs:// URI (or a shared mount) as storage_path or ${ENV}")


def check_storage(configured: str | None) -> None:
    """The preflight on the connected Ray cluster: every node that may run a trial can reach the storage."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    check_reachable_by_all_nodes(storage_root(configured), nodes, bool(os.environ.get("IMLCA_AUTOSCALING")))
