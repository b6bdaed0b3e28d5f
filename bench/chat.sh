#!/usr/bin/env bash
#
# Chat service benchmark against a running stack (./build.sh bench chat
# starts one with the rate limit off and runs this).
#
#   1. two users of its own and their room; 200 messages to page through
#   2. GET /api/messages/{room}?limit=50: the newest page, with its exact
#      total_count (MariaDB room check, MongoDB count and page)
#   3. POST /api/messages/{room}: sending (room check, Redis sequence,
#      MongoDB insert, MariaDB room update, event, fan-out publish)
#   4. /ping on the same listener, the ceiling; the ratios to it
#
# Environment: the settings of bench/lib.sh.  MongoDB's test stand-in
# scans a collection on every query, so against it the page's cost grows
# with the messages stored; a real mongod uses the indexes.

set -euo pipefail

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

check_stack

new_room

echo "=== chat service benchmark"
echo "gateway:   $BENCH_URL   api: $BENCH_API_URL   ping: $BENCH_PING_URL"
echo "wrk:       $BENCH_THREADS threads, $BENCH_CONNECTIONS connections x $BENCH_DURATION (warm-up $BENCH_WARMUP); timeout $BENCH_TIMEOUT"
echo "room:      $ROOM"
echo

for i in $(seq 1 200); do
    api POST "/api/messages/$ROOM" "$SENDER" \
        "{\"content\":\"message $i of the page benchmark\"}" >/dev/null
done


# ---------------------------------------------------------------- the runs

measure page "$BENCH_CONNECTIONS" "$BENCH_DURATION" \
    "$BENCH_API_URL/api/messages/$ROOM?limit=50" BENCH_TOKEN="$SENDER"
R_PAGE=$RESULT

measure send "$BENCH_CONNECTIONS" "$BENCH_DURATION" \
    "$BENCH_API_URL/api/messages/$ROOM" BENCH_TOKEN="$SENDER" \
    BENCH_METHOD=POST BENCH_BODY='{"content":"a message of the send benchmark"}'
R_SEND=$RESULT

measure ping "$BENCH_CONNECTIONS" "$BENCH_DURATION" "$BENCH_PING_URL/ping"
R_PING=$RESULT


# ---------------------------------------------------------------- summary

echo "$R_PAGE"
echo "$R_SEND"
echo "$R_PING"
echo

echo "=== summary"
row_header
row "GET /api/messages/{room}" "$BENCH_CONNECTIONS" "$R_PAGE"
row "POST /api/messages/{room}" "$BENCH_CONNECTIONS" "$R_SEND"
row "GET /ping" "$BENCH_CONNECTIONS" "$R_PING"
echo
echo "page / ping:  rps ratio $(div "$(field rps "$R_PAGE")" "$(field rps "$R_PING")")," \
     "p99 ratio $(div "$(field p99_ms "$R_PAGE")" "$(field p99_ms "$R_PING")")"
echo "send / ping:  rps ratio $(div "$(field rps "$R_SEND")" "$(field rps "$R_PING")")," \
     "p99 ratio $(div "$(field p99_ms "$R_SEND")" "$(field p99_ms "$R_PING")")"

finish
