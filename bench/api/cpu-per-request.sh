#!/usr/bin/env bash
# Process CPU time per request of one `slipway api` process (no cluster) on loopback, for
#   GET /api/health/status, GET /api/job/{id} (a queued job with two tasks) and POST /api/trigger/ci.
# CPU time (utime + stime from /proc) does not depend on how busy the rest of the machine is as
# much as requests/s do, so it shows where a route's cost lies.
#   PORT (5093)  DURATION (5s)  OUT_DIR (/tmp/slipway-bench-cpu)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${PORT:-5093}"
DURATION="${DURATION:-5s}"
OUT_DIR="${OUT_DIR:-/tmp/slipway-bench-cpu}"
TOKEN="slw_bench-admin-token-000000000000000000"
BASE="http://127.0.0.1:$PORT"

[[ -f "$ROOT/dist/cli/main.js" ]] || { echo "build first: npm run build" >&2; exit 1; }
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR"
SLIPWAY_DATA_DIR="$OUT_DIR" API_PORT="$PORT" API_RATE_LIMIT=0 LOG_LEVEL=warn \
  SLIPWAY_ADMIN_TOKEN="$TOKEN" node "$ROOT/dist/cli/main.js" api >"$OUT_DIR/server.log" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 80); do
  curl -sf -m 2 "$BASE/api/health/status" >/dev/null 2>&1 && break
  sleep 0.25
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
ticks_per_second=$(getconf CLK_TCK)

# Prints "<label>: <requests> requests, <microseconds> µs CPU per request".
measure() {
  local label=$1 url=$2 script=$3 before after requests
  before=$(cpu_ticks)
  requests=$(TOKEN=$TOKEN wrk -t1 -c16 -d"$DURATION" -s "$HERE/$script" "$url" |
    awk '/requests in/ {print $1}')
  after=$(cpu_ticks)
  echo "$label: $requests requests, $(((after - before) * 1000000 / ticks_per_second / requests)) µs CPU per request"
}

job=$(curl -sf -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
  -d '{"commit":"abc1234","python_versions":["3.10","3.11"]}' "$BASE/api/trigger/ci" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
measure "GET /api/health/status" "$BASE/api/health/status" read.lua
measure "GET /api/job/{id}" "$BASE/api/job/$job" read.lua
measure "POST /api/trigger/ci" "$BASE/api/trigger/ci" trigger.lua
