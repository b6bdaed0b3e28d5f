#!/usr/bin/env bash
#
# Where a message's CPU goes in nginx: as bench/profile.sh, one nginx
# process of the stack's configuration under callgrind, for
#
#   send   BENCH_PROFILE_N x POST /api/messages/{room} on the chat
#          listener, one keep-alive connection, then the wait until the
#          notification consumer has settled every one of them: the
#          instructions of a message, its notification included (the
#          consumer and the MongoDB tasks run in that process too)
#
# and prints instructions per message, the functions that take most
# (self), and the share of the send's and the consumer's entry points
# (inclusive).
#
# The run's nginx is stopped meanwhile (its consumer, in the same group,
# would take the entries) and started again at the end.
#
#   BENCH_PROFILE_N     messages [1000]
#   BENCH_PROFILE_TOP   functions listed [30]
#   BENCH_PROFILE_OFFSET  the ports of the profiled nginx: the stack's
#                       plus this, below the ephemeral ports [5000]
#
# Needs the stack of "./build.sh run" (its datastores and rendered
# nginx.conf), valgrind and redis-cli.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${BENCH_PROFILE_N:=1000}"
: "${BENCH_PROFILE_TOP:=30}"

PREFIX=$WORK/bench-profile-send
OFFSET=${BENCH_PROFILE_OFFSET:-5000}
RUN=$WORK/nginx

command -v redis-cli >/dev/null || die "redis-cli is not installed"

check_stack
new_room

redis() {
    redis-cli -h 127.0.0.1 -p "$CHAT_REDIS_PORT" "$@"
}

# the group's entries not yet settled: read but not acknowledged, and not
# read yet (lag)
unsettled() {
    redis --no-raw XINFO GROUPS message.events 2>/dev/null \
        | awk '/"pending"/ { getline; p = $2 }
               /"lag"/ { getline; l = $2 }
               END { print p + l }'
}

# the run's nginx out of the way, back at the end
stop_run() {
    local pid

    pid=$(cat "$RUN/logs/nginx.pid" 2>/dev/null) || return 0
    kill -QUIT "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

restart() {
    kill "$CG_PID" 2>/dev/null
    wait "$CG_PID" 2>/dev/null
    /usr/sbin/nginx -p "$RUN/" -c conf/nginx.conf -e logs/error.log \
        || echo "bench/profile-send.sh: start the stack's nginx again" \
                "(./build.sh run)" >&2
}

stop_run
callgrind_nginx "$PREFIX" "$OFFSET"
trap restart EXIT

url="http://127.0.0.1:$(( ${CHAT_MSG_PORT:-8002} + OFFSET ))/api/messages/$ROOM"
body='{"content":"a message of the profile"}'

{
    echo "header = \"Authorization: Bearer $SENDER\""
    echo 'header = "Content-Type: application/json"'
    echo "data = \"${body//\"/\\\"}\""
    for _ in $(seq 1 "$BENCH_PROFILE_N"); do
        echo "url = \"$url\""
        echo 'output = "/dev/null"'
    done
} > "$PREFIX/send.curl"

# warm: the pools' connections open, the caches fill, the consumer's
# first round done
for _ in 1 2 3; do
    curl -s -o /dev/null -H "Authorization: Bearer $SENDER" \
        -H 'Content-Type: application/json' -d "$body" "$url"
done

wait_settled() {
    local i

    for i in $(seq 1 600); do
        [ "$(unsettled)" = 0 ] && return 0
        sleep 0.5
    done

    die "the consumer left $(unsettled) entries unsettled"
}

wait_settled

callgrind_control -z "$CG_PID" >/dev/null 2>&1
curl -s -K "$PREFIX/send.curl" -w '%{http_code}\n' \
    | sort | uniq -c | sed 's/^/send: /' >&2
wait_settled
callgrind_control -d send "$CG_PID" >/dev/null 2>&1

restart
trap - EXIT

file=$PREFIX/callgrind.$CG_PID.1
[ -f "$file" ] || die "no callgrind dump in $PREFIX"

echo "instructions per message (nginx process, callgrind, its notification" \
     "included): $(( $(callgrind_total "$file") / BENCH_PROFILE_N ))"
echo
echo "top functions (self, all $BENCH_PROFILE_N messages):"
callgrind_top "$file" "$BENCH_PROFILE_TOP"
echo
echo "the send's and the consumer's steps (inclusive):"
callgrind_top "$file" 400 yes \
    | grep -E 'ngx_http_chat_(msg_send|msg_insert|msg_inserted|msg_settle|event_|notify_|redis_consumer_|sql_forget|authenticate|jwt_verify)' \
    | head -n "$BENCH_PROFILE_TOP"
