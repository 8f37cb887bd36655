#!/usr/bin/env bash
# Side-by-side API benchmark on loopback: Slipway and the Flask peer (../shared/peers/seed-flask
# or PEER_DIR), each with a fresh database, measured in one run with the same wrk scripts:
#   GET /api/job/{id}      a job with two tasks, seeded before the run
#   POST /api/trigger/ci   a new job per request (unique github_run_id), durable before 201
# Prints requests/s, p50 and p99 latency, the server's RSS after the run, and the ratios.
#   DURATION (10s)  CONNECTIONS (32)  THREADS (2)  API_WORKERS (Slipway processes, 1)
#   PEER_WORKERS (gunicorn workers, 4)  OUT_DIR (/tmp/slipway-bench-api)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEER_DIR="${PEER_DIR:-$ROOT/../shared/peers/seed-flask}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
SLIPWAY_PROCESSES="${API_WORKERS:-1}"
PEER_WORKERS="${PEER_WORKERS:-4}"
OUT_DIR="${OUT_DIR:-/tmp/slipway-bench-api}"
SLIPWAY_PORT="${SLIPWAY_PORT:-5091}"
PEER_PORT="${PEER_PORT:-5092}"
TOKEN="slw_bench-admin-token-000000000000000000"

command -v wrk >/dev/null || { echo "wrk not found (apt-get install -y wrk)" >&2; exit 1; }
[[ -x "$PEER_DIR/run.sh" ]] || { echo "peer not found at $PEER_DIR (set PEER_DIR)" >&2; exit 1; }
[[ -f "$ROOT/dist/cli/main.js" ]] || { echo "build first: npm run build" >&2; exit 1; }

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR/slipway" "$OUT_DIR/peer"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  done
}
trap cleanup EXIT

wait_up() {
  for _ in $(seq 1 80); do
    curl -sf -m 2 "$1/api/health/status" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  echo "server at $1 did not come up" >&2
  return 1
}

# Resident memory of a process and all its descendants, in MiB.
tree_rss_mib() {
  local total=0 pid
  for pid in $(pstree -p -T "$1" 2>/dev/null | grep -o '([0-9]\+)' | tr -d '()' || echo "$1"); do
    local kb
    kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kb:-0}))
  done
  echo $((total / 1024))
}

SLIPWAY_DATA_DIR="$OUT_DIR/slipway" API_PORT="$SLIPWAY_PORT" API_WORKERS="$SLIPWAY_PROCESSES" \
  API_RATE_LIMIT=0 LOG_LEVEL=warn SLIPWAY_ADMIN_TOKEN="$TOKEN" \
  node "$ROOT/dist/cli/main.js" api >"$OUT_DIR/slipway/server.log" 2>&1 &
pids+=($!)
slipway_pid=$!
PORT="$PEER_PORT" ORCHESTRATION_DB_PATH="$OUT_DIR/peer/orchestration.db" \
  API_WORKERS="$PEER_WORKERS" "$PEER_DIR/run.sh" >"$OUT_DIR/peer/server.log" 2>&1 &
pids+=($!)
peer_pid=$!

wait_up "http://127.0.0.1:$SLIPWAY_PORT"
wait_up "http://127.0.0.1:$PEER_PORT"

seed='{"commit":"abc1234","branch":"main","python_versions":["3.11","3.12"]}'
seed_job() {
  curl -sf -m 5 -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
    -d "$seed" "$1/api/trigger/ci" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])'
}
slipway_job=$(seed_job "http://127.0.0.1:$SLIPWAY_PORT")
peer_job=$(seed_job "http://127.0.0.1:$PEER_PORT")

# Runs wrk and prints "requests/s p50_ms p99_ms non2xx".
measure() {
  local name=$1 url=$2 script=$3
  TOKEN=$TOKEN timeout 120 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s "$HERE/$script" "$url" >"$OUT_DIR/$name.txt"
  python3 - "$OUT_DIR/$name.txt" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r'^\s*%s\s+([\d.]+)(us|ms|s)\s*$' % label, text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == 'us' else value * 1000 if unit == 's' else value
rps = float(re.search(r'Requests/sec:\s+([\d.]+)', text).group(1))
bad = re.search(r'Non-2xx or 3xx responses:\s+(\d+)', text)
errors = re.search(r'Socket errors:.*', text)
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {bad.group(1) if bad else 0} {'socket-errors' if errors else ''}")
PY
}

declare -A result
for server in peer slipway; do
  if [[ $server == peer ]]; then base="http://127.0.0.1:$PEER_PORT" job=$peer_job; else base="http://127.0.0.1:$SLIPWAY_PORT" job=$slipway_job; fi
  result[$server-get]=$(measure "$server-get" "$base/api/job/$job" read.lua)
  result[$server-post]=$(measure "$server-post" "$base/api/trigger/ci" trigger.lua)
  if [[ $server == peer ]]; then result[$server-rss]=$(tree_rss_mib "$peer_pid"); else result[$server-rss]=$(tree_rss_mib "$slipway_pid"); fi
done

count_jobs() { sqlite3 "$1" 'select count(*) from jobs'; }
slipway_jobs=$(count_jobs "$OUT_DIR/slipway/state/orchestration.db")
peer_jobs=$(count_jobs "$OUT_DIR/peer/orchestration.db")

python3 - "${result[peer-get]}" "${result[slipway-get]}" "${result[peer-post]}" "${result[slipway-post]}" \
  "${result[peer-rss]}" "${result[slipway-rss]}" "$peer_jobs" "$slipway_jobs" <<'PY'
import sys
pg, sg, pp, sp = (a.split() for a in sys.argv[1:5])
prss, srss, pjobs, sjobs = sys.argv[5:9]
print(f"{'':28} {'peer (Flask)':>22} {'Slipway':>22} {'ratio':>7}")
for label, p, s in (('GET /api/job/{id}', pg, sg), ('POST /api/trigger/ci', pp, sp)):
    print(f"{label:28} {p[0]:>10} req/s        {s[0]:>10} req/s        {float(s[0])/float(p[0]):6.1f}x")
    print(f"{'  p50 / p99 (ms)':28} {p[1]:>8} / {p[2]:<8}    {s[1]:>8} / {s[2]:<8}")
    print(f"{'  non-2xx responses':28} {p[3]:>22} {s[3]:>22}")
print(f"{'RSS after the run (MiB)':28} {prss:>22} {srss:>22}")
print(f"{'jobs in the database':28} {pjobs:>22} {sjobs:>22}")
PY
