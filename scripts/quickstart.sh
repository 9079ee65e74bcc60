#!/usr/bin/env bash
# The main job, on a fresh machine: install, start AdaMod Lab (the API and 2 local workers on a
# SQLite file under runs/), run the quick study end to end, and write its robustness report.
# Takes a few minutes on a laptop CPU. Re-running it is safe (it adds a new study to the same file).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
mkdir -p runs

PY=.venv/bin/python
PORT=${ADAMOD_LAB_PORT:-$($PY -c 'from service.processes import free_port; print(free_port())')}
export ADAMOD_LAB_URL="http://127.0.0.1:$PORT"
DATABASE_URL="sqlite:///$PWD/runs/quickstart.db"
REPORT_DIR=runs/quick-report
LOG=runs/quickstart-server.log

# Loopback only, so no tokens: this is a one-user, one-machine run.
ADAMOD_LAB_API_TOKENS="" .venv/bin/adamod-lab up --workers 2 --port "$PORT" \
    --database-url "$DATABASE_URL" >"$LOG" 2>&1 &
UP_PID=$!
stop_server() {
    if kill -0 "$UP_PID" 2>/dev/null; then
        kill -TERM "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

echo "starting AdaMod Lab on $ADAMOD_LAB_URL (log: $LOG) ..."
if ! $PY -c "
import sys
from service.processes import wait_healthy
sys.exit(0 if wait_healthy('$ADAMOD_LAB_URL', None, 180) else 1)"; then
    echo "the server did not start; see $LOG" >&2
    tail -n 30 "$LOG" >&2
    exit 1
fi

echo "submitting studies/presets/quick.yaml ..."
STUDY_ID=$(.venv/bin/adamod-lab submit studies/presets/quick.yaml --wait)
.venv/bin/adamod-lab report "$STUDY_ID" --out "$REPORT_DIR"
stop_server

cat <<MSG

Done. Study $STUDY_ID's robustness report:
  $REPORT_DIR/report.html   open it in a browser (figures inline)
  $REPORT_DIR/report.json   every metric, machine-readable
  $REPORT_DIR/*.png         lr_curves, beta3_surface, warmup, budget
Database: $DATABASE_URL (adamod-lab up --database-url ... serves it again)
MSG
