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

# Prints "<label>: <requests> requests, <µs> µs CPU per request (user <µs>, sys <µs>)".
measure() {
  local label=$1 url=$2 script=$3 user0 sys0 user1 sys1 requests ticks
  ticks=$(getconf CLK_TCK)
  read -r user0 sys0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  requests=$(TOKEN=$TOKEN wrk -t1 -c16 -d"$DURATION" -s "$HERE/$script" "$url" |
    awk '/requests in/ {print $1}')
  read -r user1 sys1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  local user=$(((user1 - user0) * 1000000 / ticks / requests))
  local sys=$(((sys1 - sys0) * 1000000 / ticks / requests))
  echo "$label: $requests requests, $((user + sys)) µs CPU per request (user $user, sys $sys)"
}

job=$(curl -sf -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
  -d '{"commit":"abc1234","python_versions":["3.10","3.11"]}' "$BASE/api/trigger/ci" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
measure "GET /api/health/status" "$BASE/api/health/status" read.lua
measure "GET /api/job/{id}" "$BASE/api/job/$job" read.lua
measure "POST /api/trigger/ci" "$BASE/api/trigger/ci" trigger.lua
