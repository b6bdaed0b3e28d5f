#!/usr/bin/env bash
#
# Login overload against a running stack (./build.sh bench overload
# starts one with the rate limit off and runs this): more clients than
# bcrypt can serve, first patient ones, then impatient ones.
#
#   1. registers a user of its own; waits until the stack is quiet
#   2. patient: OVERLOAD_CLIENTS clients log in (POST
#      /api/auth/login/json) over and over for OVERLOAD_DURATION seconds,
#      each waiting for its answer however long it takes
#   3. impatient: as many clients, each giving up on an attempt after
#      OVERLOAD_TIMEOUT seconds: it closes the connection and tries again
#      (the server may still hash the password of the attempt it left)
#
# After each, at the moment the last client stopped: one fresh login,
# timed (it queues behind whatever the server still does for clients
# that left), and the nginx workers' CPU, sampled from /proc every 0.5 s
# until a sample finds them idle (below 5% of a core) or
# OVERLOAD_DRAIN_MAX seconds passed: how long the server stays busy for
# nobody.  Then the chat_cpu_* lines of /metrics, where the server has
# them (the CPU queue's tasks, length and wait).
#
# The clients are bench/overload/login-load.pl (Perl, a process per
# client, a new connection per attempt).  A 503 (with Retry-After, which
# the clients honour) is an outcome here, not an error.
#
# Environment (defaults in brackets):
#   the settings of bench/lib.sh (URLs; where the stack's processes are)
#   OVERLOAD_CLIENTS     concurrent clients [40]
#   OVERLOAD_DURATION    seconds of each phase [15]
#   OVERLOAD_TIMEOUT     the impatient clients' timeout, seconds [2]
#   OVERLOAD_WITHIN      "answered within" threshold, seconds [2]
#   OVERLOAD_DRAIN_MAX   longest wait for idle workers and for the fresh
#                        login, seconds [60]
#   BENCH_SETTLE         seconds of waiting for a quiet stack before the
#                        phases, in all [60]
#
# Exit status: 0, or 1 when the load could not be run or an answer was a
# 4xx (a wrong request or the rate limit, not overload).

set -euo pipefail

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

: "${OVERLOAD_CLIENTS:=40}"
: "${OVERLOAD_DURATION:=15}"
: "${OVERLOAD_TIMEOUT:=2}"
: "${OVERLOAD_WITHIN:=2}"
: "${OVERLOAD_DRAIN_MAX:=60}"

CLIENT=$HERE/overload/login-load.pl

command -v perl >/dev/null || die "perl is not installed"

# host and port of the API for the client, from BENCH_API_URL
HOSTPORT=${BENCH_API_URL#http://}
HOSTPORT=${HOSTPORT%%/*}
case $HOSTPORT in
    *:*) API_HOST=${HOSTPORT%:*} API_PORT=${HOSTPORT##*:} ;;
    *)   API_HOST=$HOSTPORT API_PORT=80 ;;
esac

TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT


# ---------------------------------------------------------------- helpers

# metrics_cpu: the chat_cpu_* lines of /metrics, if there are any
metrics_cpu() {
    local out

    out=$(curl -s --max-time 5 "$BENCH_URL/metrics" | grep '^chat_cpu_' \
          || true)
    echo "${out:-(no chat_cpu_* metrics)}" | sed 's/^/  /'
}


# fresh_login: one login now; "<status> <seconds>" ("000" when it got no
# answer within OVERLOAD_DRAIN_MAX)
fresh_login() {
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' \
        --max-time "$OVERLOAD_DRAIN_MAX" -X POST \
        -H 'Content-Type: application/json' -d "$LOGIN_BODY" \
        "$BENCH_API_URL/api/auth/login/json" || true
}


# ticks_of PID...: the processes' CPU time now, summed
ticks_of() {
    local p s=0 t

    for p in "$@"; do
        t=$(cpu_ticks "$p")
        s=$((s + ${t:-0}))
    done
    echo "$s"
}


# drain: samples the nginx workers' CPU every 0.5 s until a sample finds
# them below 5% of a core, or OVERLOAD_DRAIN_MAX seconds; sets BUSY_S
# (seconds until that sample began, with a "+" when it gave up) and
# BUSY_CPU_S (the workers' CPU seconds until then)
drain() {
    local pids start first t ticks prev

    # read once: /proc alone in the loop
    mapfile -t pids < <(stack_processes \
                        | awk '$1 == "nginx_worker" { print $2 }')

    start=$(now)
    first=$(ticks_of "${pids[@]}")
    prev=$first
    BUSY_S=0.0
    while :; do
        sleep 0.5
        ticks=$(ticks_of "${pids[@]}")
        t=$(since "$start")
        # 5% of a core over half a second
        if [ $(( (ticks - prev) * 40 )) -lt "$CLK_TCK" ]; then
            break
        fi
        BUSY_S=$t
        prev=$ticks
        if awk -v t="$t" -v m="$OVERLOAD_DRAIN_MAX" 'BEGIN { exit !(t >= m) }'
        then
            BUSY_S="$t+"
            break
        fi
    done
    BUSY_CPU_S=$(awk -v d=$((prev - first)) -v hz="$CLK_TCK" \
                     'BEGIN { printf "%.2f\n", d / hz }')
}


# phase LABEL TIMEOUT: one load, then the fresh login and the drain; the
# client's RESULT line is left in RESULT, the aftermath in AFTER
phase() {
    local label=$1 timeout=$2 out rc=0 fpid fresh

    settle
    echo "--- $label: $OVERLOAD_CLIENTS clients x ${OVERLOAD_DURATION} s," \
         "$([ "$timeout" = 0 ] && echo "no client timeout" \
                               || echo "client timeout $timeout s")" \
         "(the stack $(quiet_text))"

    out=$(perl "$CLIENT" --host "$API_HOST" --port "$API_PORT" \
              --body "$LOGIN_BODY" --clients "$OVERLOAD_CLIENTS" \
              --duration "$OVERLOAD_DURATION" --timeout "$timeout" \
              --max-wait "$OVERLOAD_DRAIN_MAX" --within "$OVERLOAD_WITHIN" \
              --label "$label" 2>&1) || rc=$?

    # the clients have stopped: what does the server still do?
    fresh_login > "$TMPD/fresh" &
    fpid=$!
    drain
    wait "$fpid" || true
    read -r FRESH_CODE FRESH_S < "$TMPD/fresh" || true

    echo "$out"
    RESULT=$(echo "$out" | grep '^RESULT ' | tail -1 || true)
    if [ $rc -ne 0 ] || [ -z "$RESULT" ]; then
        FAILED+=("$label: the clients failed (exit $rc)")
        RESULT="RESULT label=$label"
    elif [[ $(field other_codes "$RESULT") =~ (^|,)4[0-9][0-9]: ]]; then
        FAILED+=("$label: 4xx answers ($(field other_codes "$RESULT")):" \
                 "a wrong request or the rate limit, not overload")
    fi

    if [ "${FRESH_CODE:-000}" = 000 ]; then
        fresh="no answer in $OVERLOAD_DRAIN_MAX s"
    else
        fresh="$FRESH_CODE in ${FRESH_S} s"
    fi
    echo "afterwards:  a fresh login: $fresh; the nginx workers busy for" \
         "$BUSY_S s after the clients stopped ($BUSY_CPU_S s of CPU)"
    AFTER="AFTER label=$label fresh_status=${FRESH_CODE:-000}"
    AFTER+=" fresh_s=${FRESH_S:-?} busy_s=$BUSY_S busy_cpu_s=$BUSY_CPU_S"
    echo "$AFTER"
    echo "metrics:"
    metrics_cpu
    echo
}


# ---------------------------------------------------------------- set-up

check_stack
new_user

LOGIN_BODY="{\"email\":\"$USER_EMAIL\",\"password\":\"$USER_PASSWORD\"}"

echo "=== login overload"
echo "api:       $BENCH_API_URL/api/auth/login/json   user: $USER_ID <$USER_EMAIL>"
echo "clients:   $OVERLOAD_CLIENTS, ${OVERLOAD_DURATION} s a phase; patient (no timeout)," \
     "then impatient (${OVERLOAD_TIMEOUT} s timeout, then a new attempt)"
echo "server:    $(grep -hE '^[[:space:]]*(thread_pool|chat_cpu|chat_thread_pool)' \
                       "$WORK/nginx/conf/nginx.conf" 2>/dev/null \
                   | sed 's/^[[:space:]]*//' | paste -sd' ' || true)"
echo "metrics before:"
metrics_cpu
echo


# ---------------------------------------------------------------- the runs

phase patient 0
R_PAT=$RESULT A_PAT=$AFTER

phase impatient "$OVERLOAD_TIMEOUT"
R_IMP=$RESULT A_IMP=$AFTER


# ---------------------------------------------------------------- summary

echo "$R_PAT"
echo "$A_PAT"
echo "$R_IMP"
echo "$A_IMP"
echo

# orow TITLE VALUE-PATIENT VALUE-IMPATIENT
orow() {
    printf '%-34s %14s %14s\n' "$1" "$2" "$3"
}

# pct SHARE: a share as a percentage
pct() {
    awk -v s="$1" 'BEGIN { if (s ~ /^[0-9.]+$/) printf "%.1f%%\n", 100 * s;
                           else print "?" }'
}

echo "=== summary"
orow "" patient impatient
orow "client timeout" none "${OVERLOAD_TIMEOUT} s"
orow "attempts" "$(field attempts "$R_PAT")" "$(field attempts "$R_IMP")"
orow "logins/s (answered 200)" "$(field ok_per_s "$R_PAT")" \
    "$(field ok_per_s "$R_IMP")"
orow "answered p50 ms" "$(field p50_ms "$R_PAT")" "$(field p50_ms "$R_IMP")"
orow "answered p99 ms" "$(field p99_ms "$R_PAT")" "$(field p99_ms "$R_IMP")"
orow "answered within ${OVERLOAD_WITHIN} s" \
    "$(pct "$(field within_share "$R_PAT")")" \
    "$(pct "$(field within_share "$R_IMP")")"
orow "answered 200 within ${OVERLOAD_WITHIN} s" \
    "$(pct "$(field ok_within_share "$R_PAT")")" \
    "$(pct "$(field ok_within_share "$R_IMP")")"
orow "status 200" "$(field ok "$R_PAT")" "$(field ok "$R_IMP")"
orow "status 503" "$(field s503 "$R_PAT")" "$(field s503 "$R_IMP")"
orow "other status" "$(field other "$R_PAT")" "$(field other "$R_IMP")"
orow "client timeouts" "$(field timeouts "$R_PAT")" "$(field timeouts "$R_IMP")"
orow "connection errors" "$(field errors "$R_PAT")" "$(field errors "$R_IMP")"
orow "then a fresh login: status" "$(field fresh_status "$A_PAT")" \
    "$(field fresh_status "$A_IMP")"
orow "then a fresh login: seconds" "$(field fresh_s "$A_PAT")" \
    "$(field fresh_s "$A_IMP")"
orow "workers busy after the clients, s" "$(field busy_s "$A_PAT")" \
    "$(field busy_s "$A_IMP")"
orow "  their CPU meanwhile, s" "$(field busy_cpu_s "$A_PAT")" \
    "$(field busy_cpu_s "$A_IMP")"

finish
