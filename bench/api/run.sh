#!/usr/bin/env bash
# Side-by-side API benchmark on loopback: Slipway and the Flask peer (../shared/peers/seed-flask
# or PEER_DIR), each with a fresh database, measured in one run with the same wrk scripts:
#   GET /api/job/{id}      a job with two tasks, seeded before the run
#   POST /api/trigger/ci   a new job per request (unique github_run_id), durable before 201
# Prints requests/s, p50 and p99 latency (medians of ROUNDS rounds), the servers' RSS after the
# run, and the ratios.
#   DURATION (10s)  CONNECTIONS (32)  THREADS (2)  API_WORKERS (Slipway processes, 1)
#   PEER_WORKERS (gunicorn workers, 4)  ROUNDS (3)  OUT_DIR (/tmp/slipway-bench-api)
#   CANCEL_IN_PROGRESS (true): false runs Slipway with the default pipeline file changed so that
#   a ci trigger does not cancel the branch's earlier ci job. The default file sets that cancel,
#   and the peer has none. It shows what the cancel costs, not the default setup.
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
ROUNDS="${ROUNDS:-3}"
SLIPWAY_PORT="${SLIPWAY_PORT:-5091}"
PEER_PORT="${PEER_PORT:-5092}"
TOKEN="slw_bench-admin-token-000000000000000000"

command -v wrk >/dev/null || { echo "wrk not found (apt-get install -y wrk)" >&2; exit 1; }
[[ -x "$PEER_DIR/run.sh" ]] || { echo "peer not found at $PEER_DIR (set PEER_DIR)" >&2; exit 1; }
[[ -f "$ROOT/dist/cli/main.js" ]] || { echo "build first: npm run build" >&2; exit 1; }

rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR/slipway" "$OUT_DIR/peer"
if [[ "${CANCEL_IN_PROGRESS:-true}" == false ]]; then
  sed 's/group: branch, cancel_in_progress: true/group: branch, cancel_in_progress: false/' \
    "$ROOT/slipway.default.yml" >"$OUT_DIR/pipelines.yml"
  grep -q 'group: branch, cancel_in_progress: false' "$OUT_DIR/pipelines.yml" ||
    { echo "the ci concurrency line of slipway.default.yml changed; update run.sh" >&2; exit 1; }
  export SLIPWAY_PIPELINES="$OUT_DIR/pipelines.yml"
fi
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

# Runs wrk and prints "requests/s p50_ms p99_ms non2xx requests".
measure() {
  local name=$1 url=$2 script=$3
  TOKEN=$TOKEN RUN_ID_PREFIX=${RUN_ID_PREFIX:-1} timeout 120 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
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
requests = int(re.search(r'(\d+) requests in', text).group(1))
print(f"{rps:.0f} {ms('50%'):.2f} {ms('99%'):.2f} {bad.group(1) if bad else 0} {requests} {'socket-errors' if errors else ''}")
PY
}

# The two servers take turns within each round, so that a slower or faster minute of the
# machine falls on both. The table shows the median of the rounds.
declare -A result
for round in $(seq 1 "$ROUNDS"); do
  for test in get post; do
    for server in peer slipway; do
      if [[ $server == peer ]]; then base="http://127.0.0.1:$PEER_PORT" job=$peer_job; else base="http://127.0.0.1:$SLIPWAY_PORT" job=$slipway_job; fi
      if [[ $test == get ]]; then
        result[$server-$test-$round]=$(measure "$server-$test-$round" "$base/api/job/$job" read.lua)
      else
        result[$server-$test-$round]=$(RUN_ID_PREFIX=$round measure "$server-$test-$round" "$base/api/trigger/ci" trigger.lua)
      fi
    done
  done
done
peer_rss=$(tree_rss_mib "$peer_pid")
slipway_rss=$(tree_rss_mib "$slipway_pid")

count_jobs() { sqlite3 "$1" 'select count(*) from jobs'; }
slipway_jobs=$(count_jobs "$OUT_DIR/slipway/state/orchestration.db")
peer_jobs=$(count_jobs "$OUT_DIR/peer/orchestration.db")

rounds_of() {
  local key=$1 round out=""
  for round in $(seq 1 "$ROUNDS"); do out+="${result[$key-$round]// /,};"; done
  echo "$out"
}

# Runs on different machines differ by more than the changes between them, so every result
# names the machine it came from.
cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo "machine: ${cpu_model:-unknown CPU}, $(nproc) CPUs, $(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1048576)) GiB," \
  "Node.js $(node --version), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end"
python3 - "$(rounds_of peer-get)" "$(rounds_of slipway-get)" "$(rounds_of peer-post)" \
  "$(rounds_of slipway-post)" "$peer_rss" "$slipway_rss" "$peer_jobs" "$slipway_jobs" <<'PY'
import statistics, sys
def rounds(arg):
    return [r.split(',') for r in arg.strip(';').split(';')]
pg, sg, pp, sp = (rounds(a) for a in sys.argv[1:5])
prss, srss, pjobs, sjobs = sys.argv[5:9]
def median(rows, i):
    return statistics.median(float(r[i]) for r in rows)
print(f"median of {len(pg)} rounds            {'peer (Flask)':>22} {'Slipway':>22} {'ratio':>7}")
for label, p, s in (('GET /api/job/{id}', pg, sg), ('POST /api/trigger/ci', pp, sp)):
    pr, sr = median(p, 0), median(s, 0)
    print(f"{label:28} {pr:>10.0f} req/s        {sr:>10.0f} req/s        {sr/pr:6.1f}x")
    print(f"{'  p50 / p99 (ms)':28} {median(p,1):>8.2f} / {median(p,2):<8.2f}    {median(s,1):>8.2f} / {median(s,2):<8.2f}")
    print(f"{'  non-2xx responses (all)':28} {sum(int(r[3]) for r in p):>22} {sum(int(r[3]) for r in s):>22}")
    ratios = ', '.join(f"{float(b[0])/float(a[0]):.1f}x" for a, b in zip(p, s))
    print(f"{'  ratio in each round':28} {ratios:>53}")
print(f"{'RSS after the run (MiB)':28} {prss:>22} {srss:>22}")
print(f"{'jobs in the database':28} {pjobs:>22} {sjobs:>22}")
# One job was seeded for the reads; every trigger request should have added one more.
print(f"{'trigger requests sent':28} {sum(int(r[4]) for r in pp):>22} {sum(int(r[4]) for r in sp):>22}")
PY
