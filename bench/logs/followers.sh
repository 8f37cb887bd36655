#!/usr/bin/env bash
# CPU of the API while many clients follow the log of one running task. Starts `slipway api`,
# `slipway orchestrator` and a local `slipway worker` on a fresh data folder, triggers a job
# whose step prints LINES lines 10 ms apart, and follows its log with FOLLOWERS curl clients
# until the job ends. Prints the API process's CPU seconds and checks that every follower
# received the same, complete log.
#   PORT (5095)  FOLLOWERS (200)  LINES (3000)  OUT_DIR (/tmp/slipway-bench-followers)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${PORT:-5095}"
FOLLOWERS="${FOLLOWERS:-200}"
LINES="${LINES:-3000}"
OUT_DIR="${OUT_DIR:-/tmp/slipway-bench-followers}"
TOKEN="slw_bench-followers-admin-token-00000000"
AGENT_TOKEN="slw_bench-followers-agent-token-00000000"
BASE="http://127.0.0.1:$PORT"

[[ -f "$ROOT/dist/cli/main.js" ]] || { echo "build first: npm run build" >&2; exit 1; }
rm -rf "$OUT_DIR"
mkdir -p "$OUT_DIR/logs"
cat >"$OUT_DIR/pipelines.yml" <<YAML
pipelines:
  ci:
    executor: local
    steps:
      - name: print
        run: 'i=0; while [ \$i -lt $LINES ]; do echo "line \$i of the output, padded to look like a build log"; i=\$((i+1)); sleep 0.01; done'
YAML

export SLIPWAY_DATA_DIR="$OUT_DIR/data" SLIPWAY_PIPELINES="$OUT_DIR/pipelines.yml" \
  SLIPWAY_ADMIN_TOKEN="$TOKEN" SLIPWAY_AGENT_TOKEN="$AGENT_TOKEN" SLIPWAY_EXECUTOR=local API_PORT="$PORT" API_RATE_LIMIT=0 \
  LOG_LEVEL=warn
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' EXIT
node "$ROOT/dist/cli/main.js" api >"$OUT_DIR/api.log" 2>&1 &
api=$!
pids+=("$api")
for _ in $(seq 1 80); do
  curl -sf -m 2 "$BASE/api/health/status" >/dev/null 2>&1 && break
  sleep 0.25
done
node "$ROOT/dist/cli/main.js" orchestrator >"$OUT_DIR/orchestrator.log" 2>&1 &
pids+=($!)
SLIPWAY_API_URL="$BASE" node "$ROOT/dist/cli/main.js" worker >"$OUT_DIR/worker.log" 2>&1 &
worker=$!
pids+=("$worker")
sleep 2
kill -0 "$worker" 2>/dev/null || { echo "the worker exited:" >&2; cat "$OUT_DIR/worker.log" >&2; exit 1; }

job=$(curl -sf -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
  -d '{"commit":"abc1234"}' "$BASE/api/trigger/ci" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
ticks() { awk '{print $14 + $15}' "/proc/$api/stat"; }
before=$(ticks)
started=$(date +%s)
followers=()
for i in $(seq 1 "$FOLLOWERS"); do
  curl -sf -N -m $((LINES / 20 + 120)) -H "Authorization: Bearer $TOKEN" \
    "$BASE/api/job/$job/logs?follow=true" \
    >"$OUT_DIR/logs/$i.txt" &
  followers+=($!)
done
failed=0
for pid in "${followers[@]}"; do wait "$pid" || failed=$((failed + 1)); done
after=$(ticks)
status=$(curl -sf -H "Authorization: Bearer $TOKEN" "$BASE/api/job/$job" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')

different=0
for i in $(seq 2 "$FOLLOWERS"); do
  cmp -s "$OUT_DIR/logs/1.txt" "$OUT_DIR/logs/$i.txt" || different=$((different + 1))
done
printed=$(grep -c '^line ' "$OUT_DIR/logs/1.txt" || true)
echo "job $job ended $status after $(($(date +%s) - started)) s"
awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" -v n="$FOLLOWERS" \
  'BEGIN {printf "API CPU while %d clients followed: %.1f s\n", n, ticks / hz}'
echo "lines in each log: $printed of $LINES; logs unlike the first: $different; failed followers: $failed"
