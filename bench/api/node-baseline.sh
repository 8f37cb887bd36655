#!/usr/bin/env bash
# The ceiling of Node's own HTTP server on this machine. A node:http server responds to every
# request with a constant JSON body the size of a job read (1,247 bytes), with no framework and
# no database. Prints requests/s under the API benchmark's load (32 connections, 2 wrk threads)
# and the process CPU per request under cpu-per-request.sh's load (16 connections, 1 thread).
#   PORT (5094)  DURATION (10s)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PORT="${PORT:-5094}"
DURATION="${DURATION:-10s}"
URL="http://127.0.0.1:$PORT/api/job/ci-0123abcd"

node -e '
  const http = require("node:http");
  const body = JSON.stringify({ padding: "x".repeat(1247 - 14) });
  http
    .createServer((request, response) => {
      response.writeHead(200, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
      });
      response.end(body);
    })
    .listen(Number(process.argv[1]), "127.0.0.1");
' "$PORT" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 40); do
  curl -sf -m 2 "$URL" >/dev/null 2>&1 && break
  sleep 0.25
done

TOKEN=unused wrk -t2 -c32 -d"$DURATION" -s "$HERE/read.lua" "$URL" |
  awk '/Requests\/sec/ {printf "32 connections: %d requests/s\n", $2}'

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
before=$(cpu_ticks)
requests=$(TOKEN=unused wrk -t1 -c16 -d"$DURATION" -s "$HERE/read.lua" "$URL" |
  awk '/requests in/ {print $1}')
after=$(cpu_ticks)
echo "16 connections: $requests requests, $(((after - before) * 1000000 / $(getconf CLK_TCK) / requests)) µs CPU per request"
