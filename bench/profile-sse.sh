#!/usr/bin/env bash
#
# Where a delivered event's instructions go in nginx: the core's SSE hub
# (chat_diagnostics, as the sse benchmark's "diag" side) in one nginx
# process under valgrind's callgrind, on the stack's Redis.
# BENCH_PROFILE_STREAMS streams of the sse benchmark's client each get
# BENCH_PROFILE_N messages; the counters are zeroed right before the
# first measured message and dumped once the last delivery arrived, so
# the count is the fan-out's alone: the pub/sub message read, the frame
# made once, and its delivery to every stream.  The kernel's share (the
# send() itself), which the sse benchmark's floor side measures, is not
# in it: callgrind sees user space only.
#
#   BENCH_PROFILE_STREAMS  streams [1000]
#   BENCH_PROFILE_N        messages [50]
#   BENCH_PROFILE_TOP      functions listed [20]
#   BENCH_PROFILE_OFFSET   added to the gateway's port for the profiled
#                          nginx, below the ephemeral ports [5000]
#
# Needs the stack's Redis ("./build.sh run"), its built modules, and
# valgrind.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${BENCH_PROFILE_STREAMS:=1000}"
: "${BENCH_PROFILE_N:=50}"
: "${BENCH_PROFILE_TOP:=20}"
: "${BENCH_PROFILE_OFFSET:=5000}"

PREFIX=$WORK/bench-profile-sse
CLIENT=$PREFIX/sse-fanout
SO=$WORK/build/ngx_http_chat_core_module.so
PORT=$(( ${CHAT_HTTP_PORT:-8080} + BENCH_PROFILE_OFFSET + 10 ))

command -v valgrind >/dev/null || die "valgrind is not installed"
[ -f "$SO" ] || die "$SO is missing (./build.sh build)"

rm -rf "$PREFIX"
mkdir -p "$PREFIX/conf" "$PREFIX/logs" "$PREFIX/tmp"

cc -O2 -Wall -Wextra -Werror -o "$CLIENT" "$HERE/sse/sse-fanout.c" -lm \
    || die "building bench/sse/sse-fanout.c failed"

cat > "$PREFIX/conf/nginx.conf" <<EOF
load_module $SO;
worker_processes  1;
master_process    off;
daemon            off;
error_log         logs/error.log warn;
events { worker_connections  $(( BENCH_PROFILE_STREAMS + 256 )); }
http {
    access_log  off;
    chat_redis  127.0.0.1:$CHAT_REDIS_PORT;
    chat_jwt_secret  "bench-profile-sse-diagnostics-only";
    chat_development  on;
    server {
        listen  127.0.0.1:$PORT;
        location /diag/ { chat_diagnostics; }
    }
}
EOF

ulimit -n $(( BENCH_PROFILE_STREAMS + 512 ))

valgrind --tool=callgrind --callgrind-out-file="$PREFIX/callgrind.%p" \
    --dump-instr=no --collect-atstart=yes \
    /usr/sbin/nginx -p "$PREFIX/" -c conf/nginx.conf \
    >"$PREFIX/valgrind.log" 2>&1 &
vg=$!
trap 'kill "$vg" 2>/dev/null; wait "$vg" 2>/dev/null' EXIT

for _ in $(seq 1 300); do
    kill -0 "$vg" 2>/dev/null \
        || die "the nginx under callgrind exited (see $PREFIX/valgrind.log)"
    grep -q emerg "$PREFIX/logs/error.log" 2>/dev/null \
        && die "$(grep emerg "$PREFIX/logs/error.log" | head -1)"
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/diag/" && break
    sleep 0.2
done

# the client's hook: zero before the first measured message, dump after
# the last delivery
cat > "$PREFIX/hook" <<EOF
#!/bin/sh
case \$1 in
    publish)   callgrind_control -z $vg >/dev/null 2>&1 ;;
    delivered) callgrind_control -d fanout $vg >/dev/null 2>&1 ;;
esac
EOF
chmod +x "$PREFIX/hook"

channel=profile$$
"$CLIENT" -n "$BENCH_PROFILE_STREAMS" -m "$BENCH_PROFILE_N" -r 10 -t 60 \
    -l profile -p "$PORT" -u "/diag/stream/$channel" \
    -P "/diag/publish/$channel" \
    -b '{"event":"new_message","id":"%S","data":{"content":"t=%T seq=%S"}}' \
    --ready connected --hook "$PREFIX/hook" > "$PREFIX/client.log" 2>&1 \
    || die "the client failed: $(grep -E '^deliveries' "$PREFIX/client.log")"

kill "$vg" 2>/dev/null
wait "$vg" 2>/dev/null
trap - EXIT

file=$PREFIX/callgrind.$vg.1
[ -f "$file" ] || die "no callgrind dump in $PREFIX"

events=$(( BENCH_PROFILE_STREAMS * BENCH_PROFILE_N ))
total=$(callgrind_total "$file")

grep -E '^deliveries' "$PREFIX/client.log"
echo "instructions per delivered event (nginx process, callgrind," \
     "$BENCH_PROFILE_STREAMS streams x $BENCH_PROFILE_N messages):" \
     "$(( total / events ))"
echo "instructions per message (its pub/sub read and frame included):" \
     "$(( total / BENCH_PROFILE_N ))"
echo
echo "top functions (self, all $events deliveries):"
callgrind_top "$file" "$BENCH_PROFILE_TOP"
