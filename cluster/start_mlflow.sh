#!/usr/bin/env bash
# Starts the MLflow tracking server on the Ray head node; `ray up` runs it before `ray start --head`.
# Usage: start_mlflow.sh ARTIFACTS_DESTINATION [MLFLOW SERVER OPTIONS...]
#   ARTIFACTS_DESTINATION: a local directory, or a bucket such as s3://b/imlca, gs://b/imlca
# Run records (experiments, runs, params, metrics) go to the database $IMLCA_MLFLOW_DB: a postgresql:// URI
# outlives the head (its password comes from PGPASSWORD or the password file $PGPASSFILE, never from the URI in a
# config); a sqlite:/// file lives on the head's disk, and each sweep copies it to its bucket at its end. The
# database is checked first: a wrong password or an unreachable host stops here with one line.
# Idempotent: a server this script started earlier and that still runs is kept, so re-running `ray up` keeps
# the tracking store up. The server listens on 127.0.0.1 ($IMLCA_MLFLOW_HOST); laptops use port-forwarding.
set -euo pipefail

ARTIFACTS="${1:?usage: start_mlflow.sh ARTIFACTS_DESTINATION}"
STORE="${IMLCA_MLFLOW_STORE:-/home/ray}"  # overridable for tests
PORT="${IMLCA_MLFLOW_PORT:-5000}"
# Loopback only: the driver runs on this machine and laptops reach the UI through `ray attach -p 5000`; the server
# has no authentication, so anything that reached it could read, change or delete every run (and the artifacts).
HOST="${IMLCA_MLFLOW_HOST:-127.0.0.1}"
DB="${IMLCA_MLFLOW_DB:-sqlite:///$STORE/mlflow.db}"
DB="${DB/#postgresql:\/\//postgresql+psycopg2://}"  # SQLAlchemy 2.1 would pick psycopg 3
PIDFILE="$STORE/mlflow.pid"
LOG="$STORE/mlflow.log"

cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }
if [[ -f "$PIDFILE" && "$(cmdline "$(cat "$PIDFILE")")" == *"mlflow server"* ]]; then
  echo "mlflow server already running (pid $(cat "$PIDFILE"))"
  exit 0
fi

if [[ -z "${IMLCA_MLFLOW_DB:-}" ]]; then
  echo "warning: IMLCA_MLFLOW_DB is unset: run records in $STORE/mlflow.db, lost with this machine" >&2
fi
# the URI reaches the check and the server in their environment, not on a command line (`ps` shows those to all)
IMLCA_MLFLOW_DB="$DB" python -m imlca.tracking.database || exit 2
MLFLOW_BACKEND_STORE_URI="$DB" nohup setsid mlflow server --host "$HOST" --port "$PORT" \
  --artifacts-destination "$ARTIFACTS" "${@:2}" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"

ASK="$HOST"; [[ "$HOST" == "0.0.0.0" ]] && ASK=127.0.0.1
for _ in $(seq 60); do
  if python -c "import urllib.request; urllib.request.urlopen('http://$ASK:$PORT/health', timeout=2)" 2>/dev/null; then
    echo "mlflow server up on $HOST:$PORT (log $LOG)"
    exit 0
  fi
  if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "error: mlflow server exited at start: $(grep -v '^\s*$' "$LOG" | tail -1); see $LOG" >&2
    exit 1
  fi
  sleep 1
done
echo "error: mlflow server did not answer on :$PORT within 60 s; see $LOG" >&2
exit 1
