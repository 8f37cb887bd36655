#!/usr/bin/env bash
# Queue a Slipway job over the HTTP API and, with --wait, print its logs and exit with its
# result. It is the shell twin of `slipway trigger` for runners without Node.js, and what the
# composite action (action.yml) runs. Needs bash, curl and jq (all on GitHub-hosted runners).
#
#   slipway-trigger.sh TYPE --commit SHA [--branch NAME] [--python-versions 3.11,3.12]
#                      [--matrix FIELD=V1,V2]... [--param KEY=VALUE]... [--wait]
#                      [--idempotency-key KEY] [--timeout SECONDS]
#                      [--poll-interval SECONDS] [--cancel-on-timeout]
#
# Environment: SLIPWAY_API_URL (base URL), SLIPWAY_TOKEN (role trigger). Without a token,
# SLIPWAY_OIDC_AUDIENCE makes each request send a GitHub Actions OIDC token for that audience
# (the job needs `permissions: id-token: write`). GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT, when
# set, make a re-run step find its job instead of queueing another, as --idempotency-key (sent
# as the Idempotency-Key header) does.
# Writes job-id and status to $GITHUB_OUTPUT and the job's end to $GITHUB_STEP_SUMMARY when set.
#
# Exit codes (the same as `slipway trigger`): 0 success, 1 failure, 2 bad usage,
# 3 error, 4 timed_out, 5 cancelled, 6 skipped, 7 --timeout passed, 8 API request failed,
# 9 a signal arrived and the job could not be cancelled, so it may still be running.
set -euo pipefail

die() { echo "slipway: $1" >&2; exit "${2:-2}"; }

type="${1:-}"
[[ -n "$type" && "$type" != -* ]] || die "usage: slipway-trigger.sh TYPE --commit SHA [--wait]"
shift
commit="" branch="" versions="" idempotency_key="" wait=false timeout=0 poll=2 cancel_on_timeout=false
timeout_given=false poll_given=false
params='{}' matrix='{}'
while (($#)); do
  case "$1" in
    --commit) commit="${2:?--commit needs a value}"; shift 2 ;;
    --branch) branch="${2:?--branch needs a value}"; shift 2 ;;
    --python-versions) versions="${2:?--python-versions needs a value}"; shift 2 ;;
    --idempotency-key)
      idempotency_key="${2:-}"
      # The API's rule, checked here so that curl never sends a line break in a header.
      jq -en --arg k "$idempotency_key" '$k | test("\\A[\\x21-\\x7e]{1,255}\\z")' >/dev/null ||
        die "--idempotency-key needs 1 to 255 printable ASCII characters without spaces"
      shift 2 ;;
    --param)
      [[ "${2:-}" == *=* ]] || die "--param needs KEY=VALUE"
      if jq -e --arg k "${2%%=*}" 'has($k)' <<<"$params" >/dev/null; then
        die "--param key \"${2%%=*}\" is repeated, but each key may appear only once"
      fi
      params=$(jq -c --arg k "${2%%=*}" --arg v "${2#*=}" '. + {($k): $v}' <<<"$params")
      shift 2 ;;
    --matrix)
      [[ "${2:-}" == ?*=* ]] || die "--matrix needs FIELD=VALUE,VALUE..., e.g. node_versions=20,22"
      field="${2%%=*}"
      case "$field" in
        commit | branch | params | github_run_id | github_run_attempt)
          die "--matrix field \"$field\" is no matrix field; set it with its own option" ;;
      esac
      if jq -e --arg k "$field" 'has($k)' <<<"$matrix" >/dev/null; then
        die "--matrix field \"$field\" is repeated; give all its values once, separated by commas"
      fi
      matrix=$(jq -c --arg k "$field" --arg v "${2#*=}" \
        '. + {($k): ($v | split(",") | map(gsub("^\\s+|\\s+$"; "")) | map(select(. != "")))}' \
        <<<"$matrix")
      jq -e --arg k "$field" '.[$k] | length > 0' <<<"$matrix" >/dev/null ||
        die "--matrix $field needs at least one value"
      shift 2 ;;
    --wait) wait=true; shift ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; timeout_given=true; shift 2 ;;
    --poll-interval) poll="${2:?--poll-interval needs seconds}"; poll_given=true; shift 2 ;;
    --cancel-on-timeout) cancel_on_timeout=true; shift ;;
    *) die "unknown option $1" ;;
  esac
done
[[ -n "$commit" ]] || die "--commit is required"
if [[ -n "$versions" ]] && jq -e 'has("python_versions")' <<<"$matrix" >/dev/null; then
  die "--python-versions and --matrix python_versions=... both set python_versions; give one"
fi
[[ -n "${SLIPWAY_API_URL:-}" ]] || die "SLIPWAY_API_URL is not set"
if [[ -z "${SLIPWAY_TOKEN:-}" ]]; then
  [[ -n "${SLIPWAY_OIDC_AUDIENCE:-}" ]] ||
    die "SLIPWAY_TOKEN is not set; set it to a token with role trigger, or set SLIPWAY_OIDC_AUDIENCE to use GitHub Actions OIDC"
  [[ -n "${ACTIONS_ID_TOKEN_REQUEST_URL:-}" && -n "${ACTIONS_ID_TOKEN_REQUEST_TOKEN:-}" ]] ||
    die "SLIPWAY_OIDC_AUDIENCE is set, but ACTIONS_ID_TOKEN_REQUEST_URL is not: give the workflow job \"permissions: id-token: write\""
fi
[[ "$timeout" =~ ^[0-9]+$ && "$poll" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
  die "--timeout and --poll-interval take seconds"
# The limits of `slipway trigger --poll-interval`: a poll interval of 0 would call the API
# without a pause, and more than 5 minutes is likely milliseconds typed as seconds.
awk -v p="$poll" 'BEGIN { exit !(p > 0 && p <= 300) }' ||
  die "--poll-interval must be more than 0 and at most 300 seconds, got $poll"
# The rules of `slipway trigger`: without --wait nothing is waited for and nothing times out,
# so these options would be ignored and a requested cancel would never happen.
if [[ "$wait" == false ]]; then
  if $timeout_given; then die "--timeout requires --wait; add --wait, or drop --timeout"; fi
  if $poll_given; then
    die "--poll-interval requires --wait; add --wait, or drop --poll-interval"
  fi
  if $cancel_on_timeout; then
    die "--cancel-on-timeout requires --wait; add --wait, or drop --cancel-on-timeout"
  fi
fi
# A timeout of 0 waits until the job ends, so it never passes and never cancels the job.
if $cancel_on_timeout && ((timeout == 0)); then
  die "--cancel-on-timeout requires a --timeout above 0; set --timeout SECONDS, or drop --cancel-on-timeout"
fi
api="${SLIPWAY_API_URL%/}"
# The URL as messages show it, with any user name and password replaced by ***.
shown_api=$(sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@#\1***@#' <<<"$api")
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

# Prints the bearer token: SLIPWAY_TOKEN, or a GitHub Actions OIDC token for
# SLIPWAY_OIDC_AUDIENCE, requested again once the one kept in $workdir expires within a minute.
# A file keeps it, because call runs in a subshell.
bearer() {
  if [[ -n "${SLIPWAY_TOKEN:-}" ]]; then
    printf '%s' "$SLIPWAY_TOKEN"
    return 0
  fi
  local expires now token payload
  expires=$(cat "$workdir/oidc-expires" 2>/dev/null || echo 0)
  # Bash arithmetic would evaluate an expression in the value, so only digits count.
  [[ "$expires" =~ ^[0-9]+$ ]] || expires=0
  now=$(date +%s)
  if ((expires - 60 > now)); then
    cat "$workdir/oidc-token"
    return 0
  fi
  token=$(curl -sSf -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \
    "$ACTIONS_ID_TOKEN_REQUEST_URL&audience=$(jq -rn --arg a "$SLIPWAY_OIDC_AUDIENCE" '$a | @uri')" |
    jq -r '.value // empty') || die "could not get a GitHub Actions OIDC token" 8
  [[ -n "$token" ]] || die "the GitHub Actions OIDC token request returned no token" 8
  # The claims are the second part of the JWT, in base64url without padding.
  payload=$(cut -d. -f2 <<<"$token" | tr '_-' '/+')
  while ((${#payload} % 4)); do payload+='='; done
  base64 -d <<<"$payload" 2>/dev/null | jq -r '.exp // 0' >"$workdir/oidc-expires" ||
    echo 0 >"$workdir/oidc-expires"
  printf '%s' "$token" >"$workdir/oidc-token"
  printf '%s' "$token"
}

# Sets curl_args to the options of an API request with method $1 and body $2, limited to $3
# seconds when given. curl then writes the HTTP status to stdout and the body to $workdir/body.
request_options() {
  local method="$1" data="$2" max_time="$3" token
  token=$(bearer) || exit 8
  curl_args=(-sS -o "$workdir/body" -w '%{http_code}' -X "$method"
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json')
  [[ -n "$data" ]] && curl_args+=(--data "$data")
  [[ -n "$max_time" ]] && curl_args+=(--max-time "$max_time")
  return 0
}

# Prints the error and exits 8 unless the request $1 $2, whose curl exit code is $3 and whose
# HTTP status curl wrote to $workdir/status, got a 2xx response.
check_response() {
  local method="$1" path="$2" curl_code="$3" status error
  if ((curl_code != 0)); then
    # curl's message, such as "(7) Failed to connect to ...", with any URL's password hidden.
    error=$(sed -E -e 's/^curl: //' -e 's#([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@ ]*@#\1***@#g' \
      "$workdir/curl-error" | tr '\n' ' ')
    die "cannot reach the Slipway API at $shown_api: ${error% }" 8
  fi
  status=$(cat "$workdir/status")
  if [[ "$status" != 2* ]]; then
    die "$method $path failed with $status: $(jq -r '.error // .' "$workdir/body" 2>/dev/null)" 8
  fi
}

# Calls the API and prints the body; prints the error and exits 8 unless the response is 2xx.
# The HTTP status is left in $workdir/status and the body in $workdir/body. A fourth argument
# limits the request to that many seconds.
call() {
  local method="$1" path="$2" data="${3:-}" max_time="${4:-}" code=0
  request_options "$method" "$data" "$max_time"
  curl "${curl_args[@]}" "$api$path" >"$workdir/status" 2>"$workdir/curl-error" || code=$?
  check_response "$method" "$path" "$code"
  cat "$workdir/body"
}

output() { [[ -n "${GITHUB_OUTPUT:-}" ]] && echo "$1=$2" >>"$GITHUB_OUTPUT"; return 0; }

# A jq filter that prints a job's reason with each control character other than tab escaped
# (\n, \r, or \u and four hex digits), as `slipway trigger` does. Any caller with a trigger
# token can set a cancel reason, and it must not move the terminal's cursor or forge a line.
printable_reason='
  def hex: "0123456789abcdef"[. : . + 1];
  .reason // empty
  | gsub("(?<c>[\\x{0}-\\x{8}\\x{a}-\\x{1f}\\x{7f}-\\x{9f}])";
      .c | explode[0]
      | if . == 10 then "\\n" elif . == 13 then "\\r"
        else "\\u00" + ((. / 16 | floor) | hex) + (. % 16 | hex) end)'

declare -A codes=([success]=0 [failure]=1 [error]=3 [timed_out]=4 [cancelled]=5 [skipped]=6)

# Writes the job's end to the step summary and stderr, as `slipway trigger` does, and exits.
finish() {
  local status="$1" reason="$2" code="$3"
  output status "$status"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    echo "Slipway job \`$job_id\` ended **$status**${reason:+: $reason}" >>"$GITHUB_STEP_SUMMARY"
  fi
  echo "slipway: job $job_id ended $status${reason:+: $reason} (exit $code)" >&2
  exit "$code"
}

# Cancels the job because the step received $interrupted, and exits 5 once the cancel is
# recorded. A job that ended before the cancel arrived exits with its own code. A failed cancel
# request exits 9 with the request's error, because the job may still be running.
cancel_after_signal() {
  local data error ended
  data=$(jq -n --arg r "slipway-trigger.sh received $interrupted" '{reason: $r}')
  # call runs in a subshell, because it exits the shell with 8 when the request fails.
  if error=$( (call POST "/api/job/$job_id/cancel" "$data" 4 >/dev/null) 2>&1); then
    output status cancelled
    die "job $job_id cancelled because the step received $interrupted" 5
  fi
  # 409 job_finished: the job ended between the last poll and the cancel.
  if [[ "$(cat "$workdir/status")" == 409 ]] &&
    ended=$(jq -er 'select(.code == "job_finished") | .status' "$workdir/body" 2>/dev/null) &&
    [[ -n "${codes[$ended]:-}" ]]; then
    finish "$ended" "it ended before the cancel that $interrupted requested" "${codes[$ended]}"
  fi
  error="after $interrupted failed, so the job may still be running: ${error#slipway: }"
  output status cancel_failed
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    echo "Cancelling Slipway job \`$job_id\` $error" >>"$GITHUB_STEP_SUMMARY"
  fi
  die "cancelling job $job_id $error (exit 9)" 9
}

# Seconds that the trigger request may still take after a signal. The runner sends SIGKILL
# 10 s after SIGINT (actions/runner, src/Runner.Sdk/ProcessInvoker.cs). These 3 s, 2 s for a
# repeated request and 4 s for the cancel request leave 1 s of those 10 s to report the end.
trigger_grace=3

# Sends the trigger request, limited to $1 seconds when given, and sets request_code to curl's
# exit code. curl runs in the background, because bash runs a trap only once the foreground
# command has ended. After a signal the request may go on for trigger_grace seconds, so that the
# job it creates can be cancelled. Returns 1 when the request was stopped then.
send_trigger() {
  local max_time="${1:-}" pid deadline=""
  request_options POST "$body" "$max_time"
  [[ -z "$idempotency_key" ]] || curl_args+=(-H "Idempotency-Key: $idempotency_key")
  # curl ignores the signals that the traps catch, because they may be sent to the whole
  # process group (a closing terminal, timeout(1), systemd), and the request must go on.
  (
    trap '' INT TERM HUP
    exec curl "${curl_args[@]}" "$api$trigger_path" >"$workdir/status" 2>"$workdir/curl-error"
  ) &
  pid=$!
  while :; do
    request_code=0
    wait "$pid" || request_code=$?
    if ! kill -0 "$pid" 2>/dev/null; then
      # A trap that ends the wait just as curl exits leaves curl's exit code to the next wait.
      if ((request_code > 128)); then
        request_code=0
        wait "$pid" || request_code=$?
      fi
      return 0
    fi
    # A trapped signal ended the wait while the request was still in flight.
    deadline=${deadline:-$((SECONDS + trigger_grace))}
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      # Without the redirection, bash reports the killed job on stderr.
      wait "$pid" 2>/dev/null || true
      return 1
    fi
  done
}

# Finds the job of a trigger request that was stopped trigger_grace seconds after a signal:
# the same request again returns the job that the GitHub run attempt created, or creates it,
# so it can be cancelled. Exits 9 without GITHUB_RUN_ID, or when the repeat fails too.
find_lost_job() {
  local lost="the trigger request had no response within ${trigger_grace}s of $interrupted"
  local error="it had no response either"
  if [[ -n "$idempotency_key" || -n "${GITHUB_RUN_ID:-}" ]]; then
    if [[ -n "$idempotency_key" ]]; then
      echo "slipway: $lost; sending it again to find the job of its Idempotency-Key" >&2
    else
      echo "slipway: $lost; sending it again to find the job of GitHub run $GITHUB_RUN_ID" >&2
    fi
    # curl's own limit of 2 s ends the repeat before the grace does, so send_trigger returns 0.
    if send_trigger 2 &&
      error=$( (check_response POST "$trigger_path" "$request_code") 2>&1); then
      return 0
    fi
    echo "slipway: the repeated trigger request failed: ${error#slipway: }" >&2
  fi
  output status cancel_failed
  die "$lost, so a job for commit $commit may have been queued and may run (exit 9)" 9
}

body=$(jq -n --arg commit "$commit" --arg branch "$branch" --arg versions "$versions" \
  --argjson params "$params" --argjson matrix "$matrix" --arg run "${GITHUB_RUN_ID:-}" --arg attempt "${GITHUB_RUN_ATTEMPT:-}" '
  {commit: $commit}
  + (if $branch != "" then {branch: $branch} else {} end)
  + (if $versions != "" then {python_versions: ($versions | split(","))} else {} end)
  + $matrix
  + (if $params != {} then {params: $params} else {} end)
  + (if $run != "" then {github_run_id: $run} else {} end)
  + (if $attempt != "" then {github_run_attempt: $attempt} else {} end)')

# From here on a signal cancels the job: SIGINT and SIGTERM come from the runner when the run
# is cancelled, SIGHUP when the terminal closes.
interrupted=""
trap 'interrupted=SIGINT' INT
trap 'interrupted=SIGTERM' TERM
trap 'interrupted=SIGHUP' HUP

trigger_path="/api/trigger/$type"
send_trigger || find_lost_job
check_response POST "$trigger_path" "$request_code"
created=$(cat "$workdir/body")
job_id=$(jq -r .job_id <<<"$created")
# The same lines as `slipway trigger` prints. 201 means that this request created the job, and
# 200 that an earlier trigger of the same GitHub run attempt created it, as on a re-run step.
line="$job_id for $commit (status $(jq -r .status <<<"$created"))"
if [[ "$(cat "$workdir/status")" == 200 ]]; then
  # Named as `slipway trigger` names them: the key, the run, or both.
  by=()
  if [[ -n "$idempotency_key" ]]; then
    by+=("Idempotency-Key $(jq -n --arg k "$idempotency_key" '$k')")
  fi
  if [[ -n "${GITHUB_RUN_ID:-}" ]]; then
    by+=("GitHub run $GITHUB_RUN_ID attempt ${GITHUB_RUN_ATTEMPT:-1}")
  fi
  by_text="${by[0]:-an earlier request}${by[1]:+ or ${by[1]}}"
  echo "slipway: found $line: an earlier trigger with $by_text created it" >&2
else
  echo "slipway: triggered $line" >&2
fi
echo "$job_id"
output job-id "$job_id"
if [[ -n "$interrupted" ]]; then cancel_after_signal; fi
$wait || exit 0

# Prints the log bytes of each task that were not printed yet, prefixed when several. Each
# attempt of a task has its own log: the rest of the one printed last comes first, then each
# later attempt from its start.
# NOTE: each poll downloads every task's whole log again and prints only the new tail, so a
# very long log costs more per poll; `slipway trigger` streams with ?follow=true instead.
print_new_logs() {
  local job="$1" count id name current attempt offset size
  count=$(jq '.tasks | length' <<<"$job")
  while IFS=$'\t' read -r id name current; do
    ((current >= 1)) || continue
    attempt=$(cat "$workdir/attempt.$id" 2>/dev/null || echo 1)
    while :; do
      call GET "/api/job/$job_id/logs?task=$id&attempt=$attempt" >"$workdir/log" || return 0
      offset=$(cat "$workdir/offset.$id" 2>/dev/null || echo 0)
      size=$(wc -c <"$workdir/log")
      if ((size > offset)); then
        if ((count > 1)); then
          tail -c +$((offset + 1)) "$workdir/log" | sed "s/^/[$name] /"
        else
          tail -c +$((offset + 1)) "$workdir/log"
        fi
        echo "$size" >"$workdir/offset.$id"
      fi
      ((attempt < current)) || break
      attempt=$((attempt + 1))
      echo "$attempt" >"$workdir/attempt.$id"
      echo 0 >"$workdir/offset.$id"
    done
  done < <(jq -r '.tasks[] | [.id, .name, .attempt] | @tsv' <<<"$job")
}

# Prints why a queued or waiting job has not started, each time the reason changes.
last_wait=""
report_wait() {
  local job="$1" status="$2" reason line
  if [[ "$status" != queued && "$status" != waiting ]]; then
    last_wait=""
    return 0
  fi
  reason=$(jq -r "$printable_reason" <<<"$job")
  [[ -n "$reason" ]] || return 0
  line="slipway: job $job_id is $status: $reason"
  [[ "$line" != "$last_wait" ]] || return 0
  last_wait=$line
  echo "$line" >&2
}

# An API restart fails a few polls in a row. As `slipway trigger` does, the script retries up to
# this many before it gives up; call prints why each one failed.
max_poll_failures=30
poll_failures=0
status=$(jq -r .status <<<"$created")
started=$SECONDS
while :; do
  if job=$(call GET "/api/job/$job_id"); then
    poll_failures=0
    status=$(jq -r .status <<<"$job")
    report_wait "$job" "$status"
    print_new_logs "$job"
    case "$status" in success | failure | error | timed_out | cancelled | skipped) break ;; esac
  else
    poll_failures=$((poll_failures + 1))
    if ((poll_failures >= max_poll_failures)); then
      die "gave up on job $job_id after $poll_failures failed polls in a row; the job may still be running" 8
    fi
    echo "slipway: retrying (failed poll $poll_failures of at most $max_poll_failures)" >&2
  fi
  if [[ -n "$interrupted" ]]; then cancel_after_signal; fi
  if ((timeout > 0 && SECONDS - started >= timeout)); then
    reason="still $status after --timeout ${timeout}s"
    if $cancel_on_timeout; then
      # A subshell, because call exits the shell with 8 (after printing why) when it fails.
      if error=$( (call POST "/api/job/$job_id/cancel" \
        '{"reason":"slipway-trigger.sh --timeout passed"}' 5 >/dev/null) 2>&1); then
        reason+="; cancel requested"
      else
        reason+="; cancel request failed: ${error#slipway: }"
      fi
    fi
    finish wait_timeout "$reason" 7
  fi
  sleep "$poll" & wait $! || true
done

finish "$status" "$(jq -r "$printable_reason" <<<"$job")" "${codes[$status]}"
