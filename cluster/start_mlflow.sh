#!/usr/bin/env bash
# Starts the MLflow tracking server on the Ray head node; `ray up` runs it before `ray start --head`.
# Usage: start_mlflow.sh ARTIFACTS_DESTINATION   (a local directory, or a bucket such as s3://b/imlca, gs://b/imlca)
# Idempotent: a server this script started earlier and that still runs is kept, so re-running `ray up` keeps
# the tracking store up. The port is reachable inside the cluster network only; laptops use port-forwarding.
set -euo pipefail

ARTIFACTS="${1:?usage: start_mlflow.sh ARTIFACTS_DESTINATION}"
STORE="${IMLCA_MLFLOW_STORE:-/home/ray}"  # overridable for tests
PORT="${IMLCA_MLFLOW_PORT:-5000}"
PIDFILE="$STORE/mlflow.pid"
LOG="$STORE/mlflow.log"

cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }
if [[ -f "$PIDFILE" && "$(cmdline "$(cat "$PIDFILE")")" == *"mlflow server"* ]]; then
  echo "mlflow server already running (pid $(cat "$PIDFILE"))"
  exit 0
fi

nohup setsid mlflow server --host 0.0.0.0 --port "$PORT" \
  --backend-store-uri "sqlite:///$STORE/mlflow.db" \
  --artifacts-destination "$ARTIFACTS" >"$LOG" 2>&1 &
echo $! >"$PIDFILE"

for _ in $(seq 60); do
  if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; then
    echo "mlflow server up on :$PORT (log $LOG)"
    exit 0
  fi
  sleep 1
done
echo "error: mlflow server did not answer on :$PORT within 60 s; see $LOG" >&2
exit 1
