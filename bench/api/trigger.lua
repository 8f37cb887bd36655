-- wrk script: POST /api/trigger/ci with a unique github_run_id per request, so that every
-- request creates a new job on both servers (a repeated run id is an idempotent retry here).
-- TOKEN (environment) is sent as a bearer token; the peer ignores it.
-- thread:set defines a global in the thread's own Lua state, so `thread_number` must not be a
-- local of this chunk. A local would shadow it, and then every thread would send the same run
-- ids and half the requests would be idempotent retries.
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  counter = 0
  -- Digits that differ between runs on one database (bench/api/run.sh passes the round), so a
  -- later run does not repeat an earlier run's ids.
  run_id_prefix = os.getenv("RUN_ID_PREFIX") or "1"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  local token = os.getenv("TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function request()
  counter = counter + 1
  local run_id = string.format("%s%d%09d", run_id_prefix, thread_number, counter)
  local body = '{"commit":"0123456789abcdef0123456789abcdef01234567","branch":"main",'
    .. '"python_versions":["3.10","3.11"],"github_run_id":"' .. run_id .. '"}'
  return wrk.format(nil, nil, nil, body)
end
