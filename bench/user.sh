#!/usr/bin/env bash
#
# User service benchmark against a running stack (./build.sh bench user
# starts one with the rate limit off and runs this).
#
#   1. registers a user of its own (a new name every run), logs in once
#   2. GET /api/profile/me with its token, then /ping on the same
#      listener: requests/s and latency, and the ratios of the two
#   3. POST /api/auth/login/json (bcrypt) with one connection per CPU
#      thread of the stack (2): logins/s as long as no login has to wait
#      long (more logins than threads is the overload benchmark's part:
#      the CPU queue answers the rest 503)
#
# Environment (defaults in brackets):
#   the settings of bench/lib.sh (URLs, threads, connections, durations)
#   BENCH_LOGIN_CONNECTIONS  connections for the login run [2]
#   BENCH_LOGIN_DURATION     length of the login run [10s]
#
# Exit status: 0, or 1 when any run saw an error (a non-2xx response, a
# socket error or a timeout), after the numbers are printed.

set -euo pipefail

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

: "${BENCH_LOGIN_CONNECTIONS:=2}"
: "${BENCH_LOGIN_DURATION:=10s}"

check_stack
new_user

LOGIN_BODY="{\"email\":\"$USER_EMAIL\",\"password\":\"$USER_PASSWORD\"}"

echo "=== user service benchmark"
echo "gateway:   $BENCH_URL   api: $BENCH_API_URL   ping: $BENCH_PING_URL"
echo "wrk:       $BENCH_THREADS threads, $BENCH_CONNECTIONS connections x $BENCH_DURATION (warm-up $BENCH_WARMUP);" \
     "login $BENCH_LOGIN_CONNECTIONS connections x $BENCH_LOGIN_DURATION; timeout $BENCH_TIMEOUT"
echo "user:      $USER_ID <$USER_EMAIL>"
echo

api GET /api/profile/me "$USER_TOKEN" >/dev/null


# ---------------------------------------------------------------- the runs

measure profile_me "$BENCH_CONNECTIONS" "$BENCH_DURATION" \
    "$BENCH_API_URL/api/profile/me" BENCH_TOKEN="$USER_TOKEN"
R_ME=$RESULT

measure ping "$BENCH_CONNECTIONS" "$BENCH_DURATION" "$BENCH_PING_URL/ping"
R_PING=$RESULT

measure login "$BENCH_LOGIN_CONNECTIONS" "$BENCH_LOGIN_DURATION" \
    "$BENCH_API_URL/api/auth/login/json" \
    BENCH_METHOD=POST BENCH_BODY="$LOGIN_BODY"
R_LOGIN=$RESULT


# ---------------------------------------------------------------- summary

echo "$R_ME"
echo "$R_PING"
echo "$R_LOGIN"
echo

echo "=== summary"
row_header
row "GET /api/profile/me" "$BENCH_CONNECTIONS" "$R_ME"
row "GET /ping" "$BENCH_CONNECTIONS" "$R_PING"
row "POST /api/auth/login" "$BENCH_LOGIN_CONNECTIONS" "$R_LOGIN"
echo
echo "profile_me / ping:  rps ratio $(div "$(field rps "$R_ME")" "$(field rps "$R_PING")")," \
     "p99 ratio $(div "$(field p99_ms "$R_ME")" "$(field p99_ms "$R_PING")")"
echo "logins/s:           $(field rps "$R_LOGIN") (p99 $(field p99_ms "$R_LOGIN") ms)"

finish
