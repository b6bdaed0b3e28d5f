#!/usr/bin/env bash
#
# User service benchmark against a running stack (./build.sh bench user
# starts one with the rate limit off and runs this).
#
#   1. registers a user of its own (a new name every run), logs in once
#   2. GET /api/profile/me with its token, then /ping on the same
#      listener: requests/s and latency, and the ratios of the two
#   3. POST /api/auth/login/json (bcrypt) with fewer connections: logins/s
#
# Environment (defaults in brackets):
#   BENCH_URL              base URL of the gateway [http://127.0.0.1:$CHAT_HTTP_PORT]
#   CHAT_HTTP_PORT         gateway port, when BENCH_URL is not set [8080]
#   BENCH_API_URL          base URL for the /api requests [$BENCH_URL]
#                          (e.g. http://127.0.0.1:8005, the service listener)
#   BENCH_PING_URL         base URL for /ping [$BENCH_URL]
#   BENCH_THREADS          wrk threads [2]
#   BENCH_CONNECTIONS      connections for /api/profile/me and /ping [64]
#   BENCH_DURATION         length of each of those runs [10s]
#   BENCH_WARMUP           unmeasured run before each measured one [2s]; 0: none
#   BENCH_LOGIN_CONNECTIONS  connections for the login run [8]
#   BENCH_LOGIN_DURATION     length of the login run [10s]
#   BENCH_TIMEOUT          wrk's per-request timeout [10s]
#
# Exit status: 0, or 1 when any run saw an error (a non-2xx response, a
# socket error or a timeout), after the numbers are printed.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATS=$HERE/stats.lua

: "${BENCH_URL:=http://127.0.0.1:${CHAT_HTTP_PORT:-8080}}"
: "${BENCH_API_URL:=$BENCH_URL}"
: "${BENCH_PING_URL:=$BENCH_URL}"
: "${BENCH_THREADS:=2}"
: "${BENCH_CONNECTIONS:=64}"
: "${BENCH_DURATION:=10s}"
: "${BENCH_WARMUP:=2s}"
: "${BENCH_LOGIN_CONNECTIONS:=8}"
: "${BENCH_LOGIN_DURATION:=10s}"
: "${BENCH_TIMEOUT:=10s}"

BENCH_URL=${BENCH_URL%/}
BENCH_API_URL=${BENCH_API_URL%/}
BENCH_PING_URL=${BENCH_PING_URL%/}

die() { printf 'bench/user.sh: %s\n' "$*" >&2; exit 1; }

command -v wrk >/dev/null || die "wrk is not installed (./build.sh deps)"
command -v curl >/dev/null || die "curl is not installed (./build.sh deps)"


# ---------------------------------------------------------------- helpers

# field NAME LINE: the value of NAME=... in a RESULT line
field() {
    local name=$1 line=$2 w

    for w in $line; do
        case $w in "$name="*) echo "${w#*=}"; return 0 ;; esac
    done
    echo "?"
}

# div A B: A / B with two decimals, "?" when B is zero or not a number
div() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (b + 0 == 0 || a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) print "?";
        else printf "%.2f\n", a / b }'
}

FAILED=()

# measure LABEL CONNECTIONS DURATION URL [VAR=value ...]: one wrk run
# (after an unmeasured warm-up); wrk's own report is printed, the RESULT
# line is left in the global RESULT
measure() {
    local label=$1 conns=$2 dur=$3 url=$4 out rc=0
    shift 4

    if [ "$BENCH_WARMUP" != 0 ]; then
        env "$@" BENCH_LABEL="$label-warmup" wrk -t"$BENCH_THREADS" \
            -c"$conns" -d"$BENCH_WARMUP" --timeout "$BENCH_TIMEOUT" \
            -s "$STATS" "$url" >/dev/null 2>&1 || true
    fi

    echo "--- $label: wrk -t$BENCH_THREADS -c$conns -d$dur --latency $url"
    out=$(env "$@" BENCH_LABEL="$label" wrk -t"$BENCH_THREADS" -c"$conns" \
              -d"$dur" --timeout "$BENCH_TIMEOUT" --latency -s "$STATS" \
              "$url" 2>&1) || rc=$?
    echo "$out"
    echo

    RESULT=$(echo "$out" | grep '^RESULT ' | tail -1 || true)
    if [ $rc -ne 0 ] || [ -z "$RESULT" ]; then
        FAILED+=("$label: wrk failed (exit $rc)")
        RESULT="RESULT label=$label"
        return 0
    fi

    local errors limited
    errors=$(field errors "$RESULT")
    limited=$(field limited "$RESULT")
    if [ "$errors" != 0 ]; then
        FAILED+=("$label: $errors errors ($(field non2xx "$RESULT") non-2xx, $limited of them 429, $(field connect "$RESULT") connect, $(field read "$RESULT") read, $(field write "$RESULT") write, $(field timeout "$RESULT") timeouts)")
        if [ "$limited" != 0 ]; then
            FAILED+=("$label: 429s come from the gateway's rate limit: start the stack with CHAT_RATE_LIMIT=0 (./build.sh bench does)")
        fi
    fi
}


# ---------------------------------------------------------------- the user

code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
       "$BENCH_PING_URL/ping" || true)
[ "$code" = 200 ] \
    || die "GET $BENCH_PING_URL/ping answered '$code', not 200: is the stack running (./build.sh run)?"

# unique per run: time, pid and a random number
ID=$(date -u +%Y%m%d%H%M%S)$$$RANDOM
USERNAME="bench_$ID"
EMAIL="bench.$ID@example.com"
PASSWORD="Bench#${RANDOM}x"
PASSWORD=${PASSWORD:0:16}

LOGIN_BODY="{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}"

echo "=== user service benchmark"
echo "gateway:   $BENCH_URL   api: $BENCH_API_URL   ping: $BENCH_PING_URL"
echo "wrk:       $BENCH_THREADS threads, $BENCH_CONNECTIONS connections x $BENCH_DURATION (warm-up $BENCH_WARMUP);" \
     "login $BENCH_LOGIN_CONNECTIONS connections x $BENCH_LOGIN_DURATION; timeout $BENCH_TIMEOUT"
echo "user:      $USERNAME <$EMAIL>"
echo

out=$(curl -s --max-time 30 -w '\n%{http_code}' \
      -H 'Content-Type: application/json' \
      -d "{\"email\":\"$EMAIL\",\"username\":\"$USERNAME\",\"password\":\"$PASSWORD\"}" \
      "$BENCH_API_URL/api/auth/register") || die "register: curl failed"
[ "${out##*$'\n'}" = 201 ] \
    || die "register answered ${out##*$'\n'}: ${out%$'\n'*}"

out=$(curl -s --max-time 30 -w '\n%{http_code}' \
      -H 'Content-Type: application/json' -d "$LOGIN_BODY" \
      "$BENCH_API_URL/api/auth/login/json") || die "login: curl failed"
[ "${out##*$'\n'}" = 200 ] \
    || die "login answered ${out##*$'\n'}: ${out%$'\n'*}"
TOKEN=$(echo "${out%$'\n'*}" \
        | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
[ -n "$TOKEN" ] || die "no access_token in the login answer: ${out%$'\n'*}"

out=$(curl -s --max-time 10 -w '\n%{http_code}' \
      -H "Authorization: Bearer $TOKEN" "$BENCH_API_URL/api/profile/me") \
    || die "profile: curl failed"
[ "${out##*$'\n'}" = 200 ] \
    || die "GET /api/profile/me answered ${out##*$'\n'}: ${out%$'\n'*}"


# ---------------------------------------------------------------- the runs

measure profile_me "$BENCH_CONNECTIONS" "$BENCH_DURATION" \
    "$BENCH_API_URL/api/profile/me" BENCH_TOKEN="$TOKEN"
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

row() {
    local name=$1 conns=$2 r=$3

    printf '%-22s %5s %11s %9s %9s %9s %7s\n' "$name" "$conns" \
        "$(field rps "$r")" "$(field p50_ms "$r")" "$(field p90_ms "$r")" \
        "$(field p99_ms "$r")" "$(field errors "$r")"
}

echo "=== summary"
printf '%-22s %5s %11s %9s %9s %9s %7s\n' \
    benchmark conns req/s p50_ms p90_ms p99_ms errors
row "GET /api/profile/me" "$BENCH_CONNECTIONS" "$R_ME"
row "GET /ping" "$BENCH_CONNECTIONS" "$R_PING"
row "POST /api/auth/login" "$BENCH_LOGIN_CONNECTIONS" "$R_LOGIN"
echo
echo "profile_me / ping:  rps ratio $(div "$(field rps "$R_ME")" "$(field rps "$R_PING")")," \
     "p99 ratio $(div "$(field p99_ms "$R_ME")" "$(field p99_ms "$R_PING")")"
echo "logins/s:           $(field rps "$R_LOGIN") (p99 $(field p99_ms "$R_LOGIN") ms)"

if [ ${#FAILED[@]} -gt 0 ]; then
    echo
    echo "!!! FAILED:"
    printf '!!!   %s\n' "${FAILED[@]}"
    exit 1
fi
