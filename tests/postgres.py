"""A real PostgreSQL 15 server (Debian's postgresql-15: initdb, pg_ctl) on 127.0.0.1, for the tracking tests.

PostgreSQL refuses to run as root, so as root its commands run as `nobody` (runuser) in a folder of its own under
/tmp that `nobody` owns. Password authentication (scram-sha-256) is on for every connection, as on a managed
database, so a wrong password is refused for real. Stopped with `pg_ctl stop`, then its postmaster and children
are killed by pid; never by name.
"""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

from servers import free_port, log_tail

BIN = Path("/usr/lib/postgresql/15/bin")  # Debian's postgresql-15 (/usr/local/bin/pg_ctl links here)
AS_USER = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


@dataclass
class Postgres:
    root: Path  # data/, the server's log and its unix socket, owned by the server's user
    port: int
    user: str
    password: str
    database: str

    def uri(self, password: str | None = None, port: int | None = None, database: str | None = None) -> str:
        """The tracking URI of the database (with the real password unless another one is given)."""
        return (f"postgresql://{self.user}:{self.password if password is None else password}@127.0.0.1:"
                f"{port or self.port}/{database or self.database}")

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*AS_USER, str(BIN / "pg_ctl"), "-D", str(self.root / "data"), *args],
                              capture_output=True, text=True, timeout=180)

    def start(self) -> None:
        done = self.pg_ctl("start", "-w", "-t", "120", "-l", str(self.log),
                           "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root}")
        assert done.returncode == 0, done.stdout + done.stderr + log_tail(self.log)

    def postmaster(self) -> int | None:
        pidfile = self.root / "data" / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.is_file() else None

    def stop(self) -> None:
        """`pg_ctl stop -m fast`, then SIGKILL to the postmaster and its children if any still run."""
        pid = self.postmaster()
        tree = []
        if pid is not None:
            try:
                tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        self.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
        for process in tree:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()


def _init(root: Path, password: str) -> None:
    """initdb into `root`/data with the superuser `imlca` and password authentication for every connection."""
    if AS_USER:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
    pwfile = root / "password"
    pwfile.write_text(password + "\n")
    if AS_USER:
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
    done = subprocess.run([*AS_USER, str(BIN / "initdb"), "-D", str(root / "data"), "-U", "imlca", "-E", "UTF8",
                           "--auth=scram-sha-256", f"--pwfile={pwfile}"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    pwfile.unlink()


def ensure_postgres() -> None:
    """apt-get Debian's postgresql-15 when its binaries are missing (as root, as CI runs; as tests/browser.py
    installs chromium), so a fresh machine needs nothing by hand."""
    if (BIN / "pg_ctl").is_file():
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"no PostgreSQL 15 in {BIN}: apt-get install postgresql-15 (Debian), then run again")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql-15"], check=True)


@contextmanager
def postgres_server(database: str = "imlca") -> Iterator[Postgres]:
    """A PostgreSQL server on a free 127.0.0.1 port with an empty database `database` owned by user `imlca`."""
    import psycopg2

    ensure_postgres()
    root = Path(tempfile.mkdtemp(prefix="imlca-pg-", dir="/tmp"))  # `nobody` cannot enter pytest's tmp folders
    server = Postgres(root, free_port(), "imlca", secrets.token_hex(12), database)
    try:
        _init(root, server.password)
        server.start()
        connection = psycopg2.connect(server.uri(database="postgres"))
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        connection.close()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
