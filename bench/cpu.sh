#!/usr/bin/env bash
#
# CPU per request of each process of the stack, against a running stack
# (./build.sh bench cpu starts one with the rate limit off and runs this).
#
#   1. two users of its own and their room (as bench/chat.sh); waits
#      until the stack is quiet (an earlier benchmark may have left work
#      queued), then reads what each process uses idle
#   2. GET /ping, GET /api/profile/me, POST /api/messages/{room}: each a
#      wrk run (after its warm-up) between two readings of every
#      process's CPU time, utime + stime from /proc/<pid>/stat (all
#      threads of a process); the difference over the completed requests
#      is the CPU per request of the nginx workers (summed), nginx's
#      master, mariadbd, redis-server and the MongoDB server
#      (each measured run starts on a quiet stack: its warm-up's work is
#      done)
#   3. after the sends, the work they left behind (every message becomes
#      a notification, created by the consumer in the nginx workers after
#      the request): the CPU until the stack is quiet again, per message
#   4. the three side by side: req/s, latency, CPU per request
#
# Environment (defaults in brackets):
#   the settings of bench/lib.sh (URLs, threads, connections, durations,
#   where the stack's processes are)
#   BENCH_SEND_DURATION  length of the send run [2s]: every message sent
#                        is a notification to create afterwards, and
#                        the MongoDB test server scans the whole
#                        collection for each, so its backlog grows with
#                        the square of the messages
#   BENCH_SEND_WARMUP    warm-up before the send run [1s]
#   BENCH_IDLE           seconds of the idle reading [3]
#   BENCH_SETTLE         seconds of waiting for a quiet stack before
#                        measuring, in all [60]; and the longest wait
#                        for the work the sends left
#
# Exit status: 0, or 1 when any run saw an error (a non-2xx response, a
# socket error or a timeout), after the numbers are printed.

set -euo pipefail

. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

: "${BENCH_SEND_DURATION:=2s}"
: "${BENCH_SEND_WARMUP:=1s}"
: "${BENCH_IDLE:=3}"

TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT

# the processes, as the CPU lines name them and the tables show them
NAMES="nginx_workers nginx_master mariadbd redis mongo"
declare -A TITLE=(
    [nginx_workers]="nginx workers"
    [nginx_master]="nginx master"
    [mariadbd]="mariadbd"
    [redis]="redis-server"
    [mongo]="MongoDB server"
    [total]="total"
)


# cpu_line LABEL REQUESTS BEFORE AFTER SECONDS: the CPU between two
# snapshots as one line, per process its CPU seconds (_s) and
# microseconds per request (_us)
cpu_line() {
    local label=$1 n=$2 before=$3 after=$4 secs=${5%+}

    cpu_delta "$before" "$after" \
    | awk -v label="$label" -v n="$n" -v secs="$secs" -v hz="$CLK_TCK" \
          -v names="$NAMES" '
        { sub(/^nginx_worker$/, "nginx_workers", $1); t[$1] = $2; p[$1] = $3 }
        END {
            k = split(names, x, " ")
            line = sprintf("CPU label=%s requests=%d seconds=%.1f workers=%d",
                           label, n, secs, p["nginx_workers"])
            for (i = 1; i <= k; i++) {
                s = t[x[i]] / hz
                all += s
                line = line sprintf(" %s_s=%.2f %s_us=%s", x[i], s, x[i],
                                    n > 0 ? sprintf("%.1f", s * 1e6 / n) : "?")
            }
            line = line sprintf(" total_s=%.2f total_us=%s", all,
                                n > 0 ? sprintf("%.1f", all * 1e6 / n) : "?")
            print line
        }'
}


# cpu_table CPU-LINE: a CPU line for people
cpu_table() {
    local line=$1 secs n p label

    secs=$(field seconds "$line")
    n=$(field requests "$line")
    printf '  %-22s %8s %12s %12s\n' process "CPU s" "% of a core" us/request
    for p in $NAMES total; do
        label=${TITLE[$p]}
        [ "$p" = nginx_workers ] && label="$label ($(field workers "$line"))"
        printf '  %-22s %8s %12s %12s\n' "$label" "$(field "${p}_s" "$line")" \
            "$(awk -v s="$(field "${p}_s" "$line")" -v t="$secs" 'BEGIN {
                 if (t > 0) printf "%.1f\n", 100 * s / t; else print "?" }')" \
            "$(field "${p}_us" "$line")"
    done
    echo "  ($n requests, $secs s)"
}


# cpu_measure LABEL CONNECTIONS DURATION WARMUP URL [VAR=value ...]: the
# warm-up, a wait until the work it left is done, then the measured run
# between two snapshots of the stack's CPU time; leaves the RESULT line
# in RESULT and the CPU line in CPU
cpu_measure() {
    local label=$1 conns=$2 dur=$3 wu=$4 url=$5 t0
    shift 5

    BENCH_WARMUP=$wu warmup "$label" "$conns" "$url" "$@"
    settle
    echo "$label: warmed up, the stack $(quiet_text)"

    cpu_snapshot > "$TMPD/$label.before"
    t0=$(now)
    BENCH_WARMUP=0 measure "$label" "$conns" "$dur" "$url" "$@"
    cpu_snapshot > "$TMPD/$label.after"

    CPU=$(cpu_line "$label" "$(field requests "$RESULT")" \
              "$TMPD/$label.before" "$TMPD/$label.after" "$(since "$t0")")
    echo "CPU per request, $label:"
    cpu_table "$CPU"
    echo "$CPU"
    echo
}


# ---------------------------------------------------------------- set-up

check_stack

new_room

api GET /api/profile/me "$SENDER" >/dev/null
stack_processes > "$TMPD/processes"

echo "=== CPU per request"
echo "gateway:   $BENCH_URL   api: $BENCH_API_URL   ping: $BENCH_PING_URL"
echo "wrk:       $BENCH_THREADS threads, $BENCH_CONNECTIONS connections x $BENCH_DURATION (warm-up $BENCH_WARMUP);" \
     "send x $BENCH_SEND_DURATION (warm-up $BENCH_SEND_WARMUP); timeout $BENCH_TIMEOUT"
echo "room:      $ROOM"
echo "processes: $(awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " }' \
                       "$TMPD/processes")"
echo "           CPU time from /proc/<pid>/stat (utime + stime, all threads), $CLK_TCK ticks a second"
echo

settle
echo "stack:     $(quiet_text)"

cpu_snapshot > "$TMPD/idle.before"
sleep "$BENCH_IDLE"
cpu_snapshot > "$TMPD/idle.after"
IDLE=$(cpu_line idle 0 "$TMPD/idle.before" "$TMPD/idle.after" "$BENCH_IDLE")
echo "idle, $BENCH_IDLE s (no requests):"
cpu_table "$IDLE"
echo "$IDLE"
echo


# ---------------------------------------------------------------- the runs

cpu_measure ping "$BENCH_CONNECTIONS" "$BENCH_DURATION" "$BENCH_WARMUP" \
    "$BENCH_PING_URL/ping"
R_PING=$RESULT C_PING=$CPU

cpu_measure profile_me "$BENCH_CONNECTIONS" "$BENCH_DURATION" \
    "$BENCH_WARMUP" "$BENCH_API_URL/api/profile/me" BENCH_TOKEN="$SENDER"
R_ME=$RESULT C_ME=$CPU

# last: what it leaves behind is measured next
cpu_measure send "$BENCH_CONNECTIONS" "$BENCH_SEND_DURATION" \
    "$BENCH_SEND_WARMUP" "$BENCH_API_URL/api/messages/$ROOM" \
    BENCH_TOKEN="$SENDER" BENCH_METHOD=POST \
    BENCH_BODY='{"content":"a message of the cpu benchmark"}'
R_SEND=$RESULT C_SEND=$CPU

# the work the sends left (the notification consumer's backlog), per
# message
quiet_wait "$BENCH_SETTLE"
cpu_snapshot > "$TMPD/send.settled"
C_AFTER=$(cpu_line send_after "$(field requests "$R_SEND")" \
              "$TMPD/send.after" "$TMPD/send.settled" "$SETTLED")
echo "after the send run, until the stack is quiet (it was $(quiet_text)):"
cpu_table "$C_AFTER"
echo "$C_AFTER"
echo


# ---------------------------------------------------------------- summary

echo "$R_PING"
echo "$R_ME"
echo "$R_SEND"
echo

# srow TITLE FIELD LINE...: one row of the side-by-side table
srow() {
    local title=$1 name=$2 l
    shift 2

    printf '%-26s' "$title"
    for l in "$@"; do
        printf ' %14s' "$(field "$name" "$l")"
    done
    echo
}

echo "=== summary"
printf '%-26s %14s %14s %14s %14s\n' "" "GET /ping" "GET profile/me" \
    "POST message" "(after sends)"
srow "connections" conns "conns=$BENCH_CONNECTIONS" "conns=$BENCH_CONNECTIONS" \
    "conns=$BENCH_CONNECTIONS"
srow "requests" requests "$R_PING" "$R_ME" "$R_SEND" "$C_AFTER"
srow "seconds" seconds "$C_PING" "$C_ME" "$C_SEND" "$C_AFTER"
srow "req/s" rps "$R_PING" "$R_ME" "$R_SEND"
srow "p50 ms" p50_ms "$R_PING" "$R_ME" "$R_SEND"
srow "p99 ms" p99_ms "$R_PING" "$R_ME" "$R_SEND"
srow "errors" errors "$R_PING" "$R_ME" "$R_SEND"
echo "CPU us/request:"
for p in $NAMES total; do
    t="  ${TITLE[$p]}"
    [ "$p" = nginx_workers ] && t="$t ($(field workers "$C_ME"))"
    srow "$t" "${p}_us" "$C_PING" "$C_ME" "$C_SEND" "$C_AFTER"
done
echo
echo "profile_me / ping:  rps ratio $(div "$(field rps "$R_ME")" "$(field rps "$R_PING")")," \
     "p99 ratio $(div "$(field p99_ms "$R_ME")" "$(field p99_ms "$R_PING")")," \
     "nginx workers' CPU per request ratio $(div "$(field nginx_workers_us "$C_ME")" "$(field nginx_workers_us "$C_PING")")"
echo "a message:          $(field total_us "$C_SEND") us of CPU while sent," \
     "$(field total_us "$C_AFTER") us after (the stack was $(quiet_text))"
echo

# the goals of an authenticated read: the handler's own nginx CPU is
# profile/me's less /ping's (nginx's part of any request)
goal read_handler_us \
    "$(awk -v a="$(field nginx_workers_us "$C_ME")" \
           -v b="$(field nginx_workers_us "$C_PING")" \
           'BEGIN { if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) print "?";
                    else printf "%.1f\n", a - b }')" le 20 \
    "nginx CPU of the profile/me handler per read, us (profile/me less /ping)"
goal read_mariadb_us "$(field mariadbd_us "$C_ME")" le 30 \
    "mariadbd CPU per profile/me read, us"
goal read_ping_ratio "$(div "$(field rps "$R_ME")" "$(field rps "$R_PING")")" \
    ge 0.35 "profile/me req/s over /ping req/s, same nginx, same run"

# the goal: a message's CPU in nginx, MariaDB and Redis, while it is sent
# and for its notification after; the MongoDB server is left out (the
# test server scans whole collections for what mongod finds by index)
SEND_US=$(awk -v s="$C_SEND" -v a="$C_AFTER" 'BEGIN {
    n = split(s " " a, f, " ")
    for (i = 1; i <= n; i++) {
        if (f[i] ~ /^(nginx_workers|nginx_master|mariadbd|redis)_us=/) {
            sub(/^[^=]*=/, "", f[i]); t += f[i]
        }
    }
    printf "%.1f\n", t }')
SEND_MET=$(awk -v v="$SEND_US" 'BEGIN { print (v <= 300) ? "yes" : "no" }')
echo
echo "GOAL id=send_cpu_us value=$SEND_US target=le:300 met=$SEND_MET" \
     "what=\"CPU per message sent, us, its notification included: nginx" \
     "workers + mariadbd + redis-server, while sent and after\""

finish
