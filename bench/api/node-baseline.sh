#!/usr/bin/env bash
# The ceiling of Node's own HTTP server on this machine. A node:http server responds to every
# request with a constant JSON body the size of a job read (1,247 bytes), with no framework and
# no database. Prints requests/s under the API benchmark's load (32 connections, 2 wrk threads)
# and the process CPU per request under cpu-per-request.sh's load (16 connections, 1 thread).
#
# Then the same server runs again and spends WORK_US microseconds of busy work on each request,
# as a framework and a database would. Both runs print the kernel (sys) time per request beside
# the user time, because in some virtual machines a slower server pays more kernel time to wake
# the waiting client.
#   PORT (5094)  DURATION (10s)  WORK_US (25)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${PORT:-5094}"
DURATION="${DURATION:-10s}"
WORK_US="${WORK_US:-25}"
URL="http://127.0.0.1:$PORT/api/job/ci-0123abcd"
pid=
trap '[[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true' EXIT

start_server() {
  node -e '
    const http = require("node:http");
    const work = BigInt(Number(process.argv[2]) * 1000);
    const body = JSON.stringify({ padding: "x".repeat(1247 - 14) });
    http
      .createServer((request, response) => {
        const until = process.hrtime.bigint() + work;
        while (work > 0n && process.hrtime.bigint() < until);
        response.writeHead(200, {
          "content-type": "application/json; charset=utf-8",
          "content-length": Buffer.byteLength(body),
        });
        response.end(body);
      })
      .listen(Number(process.argv[1]), "127.0.0.1");
  ' "$PORT" "$1" &
  pid=$!
  for _ in $(seq 1 40); do
    curl -sf -m 2 "$URL" >/dev/null 2>&1 && return
    sleep 0.25
  done
  echo "the node:http server did not respond on port $PORT" >&2
  exit 1
}

stop_server() {
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
}

# Prints "<label>: <requests> requests, <µs> µs CPU per request (user <µs>, sys <µs>)".
measure() {
  local label=$1 user0 sys0 user1 sys1 requests ticks
  ticks=$(getconf CLK_TCK)
  read -r user0 sys0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  requests=$(TOKEN=unused wrk -t1 -c16 -d"$DURATION" -s "$HERE/read.lua" "$URL" |
    awk '/requests in/ {print $1}')
  read -r user1 sys1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
  local user=$(((user1 - user0) * 1000000 / ticks / requests))
  local sys=$(((sys1 - sys0) * 1000000 / ticks / requests))
  echo "$label: $requests requests, $((user + sys)) µs CPU per request (user $user, sys $sys)"
}

start_server 0
TOKEN=unused wrk -t2 -c32 -d"$DURATION" -s "$HERE/read.lua" "$URL" |
  awk '/Requests\/sec/ {printf "32 connections: %d requests/s\n", $2}'
measure "16 connections"
stop_server

start_server "$WORK_US"
measure "16 connections, $WORK_US µs of work per request"
stop_server
