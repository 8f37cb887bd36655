#!/usr/bin/env bash
# The ceiling of a trigger's HTTP part on this machine. A bare Fastify server (the framework
# Slipway uses) has one POST route, which validates the body of bench/api/trigger.lua against a
# JSON schema and responds 201 with a job id. It has no authentication, hooks or database.
# Prints requests/s under the API benchmark's load (32 connections, 2 wrk threads) and the
# process CPU per request under cpu-per-request.sh's load (16 connections, 1 thread). Beside
# `npx tsx bench/api/sqlite-floor.ts` (SQLite alone with a trigger's rows) it bounds what one
# process can reach.
#   PORT (5099)  DURATION (10s)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT="${PORT:-5099}"
DURATION="${DURATION:-10s}"
URL="http://127.0.0.1:$PORT/api/trigger/ci"

cd "$ROOT"
node --input-type=module -e '
  import Fastify from "fastify";
  import { randomBytes } from "node:crypto";
  const app = Fastify({ logger: false });
  const body = {
    type: "object",
    additionalProperties: false,
    required: ["commit"],
    properties: {
      commit: { type: "string", pattern: "^[0-9a-f]{7,40}$" },
      branch: { type: "string", minLength: 1, maxLength: 255 },
      python_versions: { type: "array", items: { type: "string", maxLength: 32 }, maxItems: 16 },
      github_run_id: { type: "string", pattern: "^[0-9]{1,20}$" },
    },
  };
  const reply = {
    type: "object",
    properties: { job_id: { type: "string" }, status: { type: "string" }, reason: { type: ["string", "null"] } },
  };
  app.post("/api/trigger/ci", { schema: { body, response: { 201: reply } } }, async (request, response) => {
    response.code(201);
    return { job_id: `ci-${randomBytes(4).toString("hex")}`, status: "queued", reason: null };
  });
  await app.listen({ port: Number(process.argv[1]), host: "127.0.0.1" });
' "$PORT" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 40); do
  curl -sf -m 2 -X POST -H 'Content-Type: application/json' -d '{"commit":"abc1234"}' "$URL" \
    >/dev/null 2>&1 && break
  sleep 0.25
done

TOKEN=unused wrk -t2 -c32 -d"$DURATION" -s "$HERE/trigger.lua" "$URL" |
  awk '/Requests\/sec/ {printf "32 connections: %d requests/s\n", $2} /Non-2xx/ {print "non-2xx:", $NF}'

ticks=$(getconf CLK_TCK)
read -r user0 sys0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
requests=$(TOKEN=unused wrk -t1 -c16 -d"$DURATION" -s "$HERE/trigger.lua" "$URL" |
  awk '/requests in/ {print $1}')
read -r user1 sys1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
user=$(((user1 - user0) * 1000000 / ticks / requests))
sys=$(((sys1 - sys0) * 1000000 / ticks / requests))
echo "16 connections: $requests requests, $((user + sys)) µs CPU per request (user $user, sys $sys)"
