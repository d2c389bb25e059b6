"""The database behind MLflow's run records: a PostgreSQL server checked before anything runs, and a consistent
copy of a sqlite store (which lives on one machine's disk) for the sweep to keep in its bucket.

On a cluster the head's MLflow server keeps its records in $IMLCA_MLFLOW_DB (cluster/start_mlflow.sh): a
postgresql:// URI outlives the head; a sqlite:/// file does not, so each sweep copies it beside its Tune state.
`python -m imlca.tracking.database [URI]` (default: $IMLCA_MLFLOW_DB) is the check start_mlflow.sh runs before it
starts the server.
"""
from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path
from urllib.parse import urlsplit

from imlca.errors import TrackingError, UserError, without_passwords

SERVER_DB = "IMLCA_MLFLOW_DB"  # the head's MLflow server's database (cluster configs)
POSTGRES = ("postgresql://", "postgresql+psycopg2://", "postgres://")
AUTH_FAILED = ("password authentication failed", "no password supplied", "role \"")


def with_driver(uri: str) -> str:
    """A bare `postgresql://` URI with the driver imlca installs named: SQLAlchemy 2.1 reads a bare one as psycopg
    (v3), 2.0 as psycopg2."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", uri)


def libpq_uri(uri: str) -> str:
    """SQLAlchemy's `postgresql+psycopg2://` as libpq reads it (`postgresql://`)."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", uri)


def check_postgres(uri: str, timeout: int = 5) -> None:
    """Connect once, quickly: MLflow itself retries a refused connection 9 times over ~100 s (store/db/utils.py)."""
    import psycopg2

    try:
        psycopg2.connect(libpq_uri(uri), connect_timeout=timeout).close()
    except psycopg2.OperationalError as err:
        reason = " ".join(str(err).split())
        reason = re.sub(r'^connection to server at "[^"]*", port \d+ failed: ', "", reason)
        if any(marker in reason for marker in AUTH_FAILED):
            what, fix = "refused the login", ("check the user and password: in the URI, or in PGPASSWORD / the "
                                              "password file PGPASSFILE (default ~/.pgpass, mode 0600)")
        else:
            what, fix = "is unreachable", ("start the database, or fix its host, port and name in "
                                           f"MLFLOW_TRACKING_URI / tracking.uri (on a cluster: ${SERVER_DB})")
        raise TrackingError(f"PostgreSQL tracking database {without_passwords(libpq_uri(uri))} {what} ({reason}); "
                            f"{fix}") from None


def sqlite_file(uri: str) -> Path | None:
    """The local file of a `sqlite:///` tracking URI; for an MLflow server on this machine (the head), the file
    of its $IMLCA_MLFLOW_DB when that is sqlite. None when the records are elsewhere (a database server)."""
    if not uri.startswith("sqlite:///"):
        served = os.environ.get(SERVER_DB, "")
        local_server = urlsplit(uri).hostname in ("127.0.0.1", "localhost")
        if not (local_server and served.startswith("sqlite:///")):
            return None
        uri = served
    path = Path(uri[len("sqlite:///"):])
    return path if path.is_file() else None


def snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a sqlite database that MLflow may be writing meanwhile (sqlite's online backup)."""
    src, dst = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def check_store(uri: str) -> None:
    if uri.startswith(POSTGRES):
        check_postgres(uri)


if __name__ == "__main__":  # start_mlflow.sh: one line and exit code 2 when the server's database is unreachable
    try:
        check_store(sys.argv[1] if len(sys.argv) > 1 else os.environ[SERVER_DB])  # the environment keeps it off `ps`
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
