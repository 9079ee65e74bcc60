#!/usr/bin/env bash
# The recorded CPU suite: the four studies of studies/presets/suite_cpu/ through the service with
# 2 local workers on one SQLite file, then their cross-workload comparison. Writes each study's
# report to runs/suite/<name>/ and the comparison (compare.json, compare.html, profiles.png) to
# runs/suite/compare/. About 15-25 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh >/dev/null
mkdir -p runs/suite
PY=.venv/bin/python
PORT=${ADAMOD_LAB_PORT:-$($PY -c 'from service.processes import free_port; print(free_port())')}
export ADAMOD_LAB_URL="http://127.0.0.1:$PORT"
DB="runs/suite/suite.db"
rm -f "$DB" "$DB-wal" "$DB-shm"

ADAMOD_LAB_API_TOKENS="" .venv/bin/adamod-lab up --workers 2 --port "$PORT" \
    --database-url "sqlite:///$PWD/$DB" >runs/suite/server.log 2>&1 &
UP_PID=$!
trap 'kill -TERM "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true' EXIT
$PY -c "
import sys
from service.processes import wait_healthy
sys.exit(0 if wait_healthy('$ADAMOD_LAB_URL', None, 180) else 1)"

started=$(date +%s)
IDS=()
for spec in studies/presets/suite_cpu/*.yaml; do
    IDS+=("$(.venv/bin/adamod-lab submit "$spec")")
done
status_of() {
    .venv/bin/adamod-lab status "$1" --json | $PY -c 'import json, sys; print(json.load(sys.stdin)["status"])'
}
for i in "${!IDS[@]}"; do
    id=${IDS[$i]}
    while case "$(status_of "$id")" in queued | running) true ;; *) false ;; esac; do
        sleep 10
    done
    name=$(basename "$(ls studies/presets/suite_cpu/*.yaml | sed -n "$((i + 1))p")" .yaml)
    .venv/bin/adamod-lab report "$id" --out "runs/suite/$name"
done
echo "studies finished in $(( $(date +%s) - started )) s"
ids=$(IFS=,; echo "${IDS[*]}")
mkdir -p runs/suite/compare
curl -sf "$ADAMOD_LAB_URL/compare?studies=$ids" -o runs/suite/compare/compare.json
curl -sf "$ADAMOD_LAB_URL/compare.html?studies=$ids" -o runs/suite/compare/compare.html
curl -sf "$ADAMOD_LAB_URL/compare/profiles.png?studies=$ids" -o runs/suite/compare/profiles.png
echo "comparison: runs/suite/compare/ (studies $ids)"
