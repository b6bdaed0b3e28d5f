#!/usr/bin/env bash
#
# What the wrk benchmarks share (sourced by bench/user.sh and
# bench/chat.sh): settings, one measured wrk run, the result fields, a
# user of their own.
#
# Environment (defaults in brackets):
#   BENCH_URL              base URL of the gateway [http://127.0.0.1:$CHAT_HTTP_PORT]
#   CHAT_HTTP_PORT         gateway port, when BENCH_URL is not set [8080]
#   BENCH_API_URL          base URL for the /api requests [$BENCH_URL]
#   BENCH_PING_URL         base URL for /ping [$BENCH_URL]
#   BENCH_THREADS          wrk threads [2]
#   BENCH_CONNECTIONS      connections of the main runs [64]
#   BENCH_DURATION         length of each of those runs [10s]
#   BENCH_WARMUP           unmeasured run before each measured one [2s]; 0: none
#   BENCH_TIMEOUT          wrk's per-request timeout [10s]

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATS=$HERE/stats.lua

: "${BENCH_URL:=http://127.0.0.1:${CHAT_HTTP_PORT:-8080}}"
: "${BENCH_API_URL:=$BENCH_URL}"
: "${BENCH_PING_URL:=$BENCH_URL}"
: "${BENCH_THREADS:=2}"
: "${BENCH_CONNECTIONS:=64}"
: "${BENCH_DURATION:=10s}"
: "${BENCH_WARMUP:=2s}"
: "${BENCH_TIMEOUT:=10s}"

BENCH_URL=${BENCH_URL%/}
BENCH_API_URL=${BENCH_API_URL%/}
BENCH_PING_URL=${BENCH_PING_URL%/}

die() { printf 'bench/%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

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


# the stack answers at all
check_stack() {
    local code

    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
           "$BENCH_PING_URL/ping" || true)
    [ "$code" = 200 ] \
        || die "GET $BENCH_PING_URL/ping answered '$code', not 200: is the stack running (./build.sh run)?"
}


# api METHOD PATH [TOKEN] [BODY]: the answer's body; dies unless 2xx
api() {
    local method=$1 path=$2 token=${3:-} body=${4:-} out code
    local args=(-s --max-time 30 -w '\n%{http_code}' -X "$method")

    [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
    [ -n "$body" ] && args+=(-H 'Content-Type: application/json' -d "$body")

    out=$(curl "${args[@]}" "$BENCH_API_URL$path") \
        || die "$method $path: curl failed"
    code=${out##*$'\n'}
    case $code in 2??) ;; *) die "$method $path answered $code: ${out%$'\n'*}" ;; esac
    echo "${out%$'\n'*}"
}


# new_user: a registered, logged-in user of its own (a new name every
# run); sets USER_ID, USER_EMAIL, USER_PASSWORD, USER_TOKEN
new_user() {
    local id out

    id=$(date -u +%Y%m%d%H%M%S)$$$RANDOM
    USER_EMAIL="bench.$id@example.com"
    USER_PASSWORD="Bench#${RANDOM}x"
    USER_PASSWORD=${USER_PASSWORD:0:16}

    out=$(api POST /api/auth/register "" \
          "{\"email\":\"$USER_EMAIL\",\"username\":\"bench_$id\",\"password\":\"$USER_PASSWORD\"}")
    USER_ID=$(echo "$out" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')

    out=$(api POST /api/auth/login/json "" \
          "{\"email\":\"$USER_EMAIL\",\"password\":\"$USER_PASSWORD\"}")
    USER_TOKEN=$(echo "$out" \
                 | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')

    [ -n "$USER_ID" ] && [ -n "$USER_TOKEN" ] || die "no user: $out"
}


row() {
    local name=$1 conns=$2 r=$3

    printf '%-26s %5s %11s %9s %9s %9s %7s\n' "$name" "$conns" \
        "$(field rps "$r")" "$(field p50_ms "$r")" "$(field p90_ms "$r")" \
        "$(field p99_ms "$r")" "$(field errors "$r")"
}


row_header() {
    printf '%-26s %5s %11s %9s %9s %9s %7s\n' \
        benchmark conns req/s p50_ms p90_ms p99_ms errors
}


# the end of a benchmark: its failures, if any, and the exit status
finish() {
    if [ ${#FAILED[@]} -gt 0 ]; then
        echo
        echo "!!! FAILED:"
        printf '!!!   %s\n' "${FAILED[@]}"
        exit 1
    fi
}
