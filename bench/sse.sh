#!/usr/bin/env bash
#
# SSE fan-out benchmark: streams on one channel, messages published,
# delivery latency from send to receipt over every stream, nginx memory
# per open stream and nginx (and Redis) CPU per delivered event; the same
# client, in the same run, against Debian's nchan (libnginx-mod-nchan)
# set up as the equivalent pub/sub on this machine; side by side, with
# the ratios and the goals (GOAL lines) they are held to.
#
#   ./build.sh bench sse      (or bench/sse.sh on its own)
#
# What it runs (bench/sse/sse-fanout.c, built here with cc):
#   room   the product: N streams GET /api/messages/stream/<room>
#          ?access_token=... on the stack's gateway, messages sent with
#          POST /api/messages/<room> (Bearer) by the other member of the
#          room; fan-out through Redis pub/sub to every stream in every
#          worker.  Starts or reloads the stack (CHAT_RATE_LIMIT=0
#          ./build.sh run), registers two users, gets their room.
#   diag   the core's SSE hub alone: a private nginx (2 workers) with
#          chat_diagnostics, /diag/stream/<name> and /diag/publish/<name>,
#          on the stack's Redis: the hub's raw fan-out cost, no auth, no
#          room checks, no MongoDB.
#   nchan  the baseline, always run: a private nginx (2 workers) with
#          ngx_nchan_module, an eventsource subscriber location and an
#          HTTP publisher location, on the stack's Redis.
#   floor  the floor, always run: bench/sse/sse-floor.c, 2 worker
#          processes that do nothing but subscribe on the stack's Redis
#          and send() each message to each stream: the kernel's share of
#          a delivered event, which no server can go below (its memory
#          per stream is the kernel's too: it keeps only a descriptor).
#
# In this order:
#   1. room with 1 stream (SSE_M messages at SSE_RATE): what a POST costs
#      the stack's workers and Redis without fan-out, subtracted from the
#      room runs' CPU so that their per-event figure is the fan-out's;
#   2. for each size of SSE_N: room, diag, nchan, floor (the stack's
#      workers are fresh for each room run: a reload; the private nginx
#      start anew);
#   3. scale: room with SSE_SCALE_N streams, SSE_SCALE_M messages at
#      SSE_SCALE_RATE a second, p99 against SSE_SCALE_P99 ms;
#   4. two nodes: a second nginx of ours with the stack's configuration
#      (.work/bench-node2, its own ports, the same datastores), every
#      other one of SSE_NODES_N streams on it, SSE_NODES_M messages sent
#      to the first: every stream of both must get every message.
#
# Memory: the sum of Rss and Pss of the nginx workers (/proc/<pid>/
# smaps_rollup) before the streams open, once all are open, and once
# every message was delivered (the streams still open); per stream is
# the growth over N.  CPU: utime + stime of the nginx workers (all their
# threads) and of redis-server, read right before the first measured
# message and once the last delivery arrived, over the deliveries.
#
# Environment (defaults in brackets):
#   SSE_TARGET        room | diag | room,diag: the nginx-chat sides
#                     [room,diag]; nchan always runs
#   SSE_N             stream counts, one comparison each [5000 10000]
#   SSE_M             measured messages [100]
#   SSE_RATE          messages per second; 0: each POST right after the
#                     previous one's response [5]
#   SSE_TIMEOUT       seconds to wait for deliveries after the last
#                     publish [15]
#   SSE_SCALE_N       streams of the scale run; 0: none [10000]
#   SSE_SCALE_M       its messages [30]
#   SSE_SCALE_RATE    its messages per second [1]
#   SSE_SCALE_P99     its p99 goal, ms [200]
#   SSE_NODES_N       streams of the two-node run, half on each; 0: none
#                     [10000]
#   SSE_NODES_M       its messages, at SSE_RATE [30]
#   SSE_NCHAN_STORE   nostore | distributed | memory: nchan's storage
#                     [nostore: Redis as a pub/sub bus only, as the hub]
#   SSE_DIAG_PORT     port of the private diagnostics nginx
#                     [CHAT_HTTP_PORT + 10410: 18490]
#   SSE_NCHAN_PORT    port of the private nchan nginx
#                     [CHAT_HTTP_PORT + 10411: 18491]
#   SSE_NODE2_PORT    the second node's gateway; its user, friend, chat
#                     and notification listeners on the next four ports
#                     [CHAT_HTTP_PORT + 10412: 18492..18496]
#   SSE_FLOOR_PORT    port of the floor server [CHAT_HTTP_PORT + 10417:
#                     18497]
#   CHAT_HTTP_PORT, CHAT_REDIS_PORT, CHAT_WORK, ...: as build.sh
#
# Output: the client's report for each run, memory and CPU lines, a
# summary table for each size with the ratios against nchan, the scale
# and two-node runs, and GOAL lines; saved to bench/results/sse-<UTC
# timestamp>.txt (unless BENCH_RESULT_FILE names the file a caller saves
# it to).
# Exit status: 0, or 1 when a run lost messages, saw errors or could not
# be measured (a goal missed is reported, met=no, not an error).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")

# cpu_ticks, store_pid, field, goal
. "$HERE/lib.sh"

WORK=${CHAT_WORK:-$TOP/.work}
NGINX=${CHAT_NGINX_BINARY:-/usr/sbin/nginx}


# ------------------------------------------------------------ samples

# the workers of a master, nginx's or the floor's (not old ones shutting
# down):
# "<rss kB> <pss kB> <workers> <cpu ticks>"
sample() {
    local master=$1 pid args rss=0 pss=0 n=0 ticks=0 r p t

    while read -r pid args; do
        case $args in
            "nginx: worker process" | "sse-floor: worker process") ;;
            *) continue ;;
        esac
        read -r r p < <(awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 }
                             END { print r + 0, p + 0 }' \
                            "/proc/$pid/smaps_rollup" 2>/dev/null \
                        || echo "0 0")
        t=$(cpu_ticks "$pid")
        rss=$((rss + r))
        pss=$((pss + p))
        ticks=$((ticks + ${t:-0}))
        n=$((n + 1))
    done < <(ps -o pid=,args= --ppid "$master" 2>/dev/null)

    echo "$rss $pss $n $ticks"
}

# the client's hook: sse.sh sample <master> <redis pid> <file> <phase>
# appends "<phase> <rss kB> <pss kB> <workers> <ticks> <redis ticks>"
if [ "${1:-}" = sample ]; then
    t=$(cpu_ticks "$3")
    echo "$5 $(sample "$2") ${t:-?}" >> "$4"
    exit 0
fi


# ---------------------------------------------------------------- settings

: "${SSE_TARGET:=room,diag}"
: "${SSE_N:=5000 10000}"
: "${SSE_M:=100}"
: "${SSE_RATE:=5}"
: "${SSE_TIMEOUT:=15}"
: "${SSE_SCALE_N:=10000}"
: "${SSE_SCALE_M:=30}"
: "${SSE_SCALE_RATE:=1}"
: "${SSE_SCALE_P99:=200}"
: "${SSE_NODES_N:=10000}"
: "${SSE_NODES_M:=30}"
: "${SSE_NCHAN_STORE:=nostore}"
: "${CHAT_HTTP_PORT:=8080}"
: "${CHAT_USER_PORT:=8005}"
: "${CHAT_FRIEND_PORT:=8003}"
: "${CHAT_MSG_PORT:=8002}"
: "${CHAT_NOTIFY_PORT:=8004}"
# the private servers' ports follow the gateway's, so that the benchmark
# of a stack on other ports does not collide with one on the defaults
: "${SSE_DIAG_PORT:=$((CHAT_HTTP_PORT + 10410))}"
: "${SSE_NCHAN_PORT:=$((CHAT_HTTP_PORT + 10411))}"
: "${SSE_NODE2_PORT:=$((CHAT_HTTP_PORT + 10412))}"
: "${SSE_FLOOR_PORT:=$((CHAT_HTTP_PORT + 10417))}"

BASE=http://127.0.0.1:$CHAT_HTTP_PORT
SSE_WORK=$WORK/bench-sse
CLIENT=$SSE_WORK/sse-fanout
FLOOR=$SSE_WORK/sse-floor
STACK=$WORK/nginx

log() { printf '>>> %s\n' "$*" >&2; }
die() { printf 'bench/sse.sh: %s\n' "$*" >&2; exit 1; }

case $SSE_NCHAN_STORE in
    nostore | distributed | memory) ;;
    *) die "SSE_NCHAN_STORE: nostore, distributed or memory," \
           "not '$SSE_NCHAN_STORE'" ;;
esac

SIZES=()
for n in ${SSE_N//,/ }; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 2 ] \
        || die "SSE_N: stream counts of at least 2, not '$n'"
    SIZES+=("$n")
done
[ ${#SIZES[@]} -gt 0 ] || die "SSE_N is empty"

for v in SSE_M SSE_TIMEOUT SSE_SCALE_N SSE_SCALE_M SSE_SCALE_P99 \
         SSE_NODES_N SSE_NODES_M SSE_DIAG_PORT SSE_NCHAN_PORT SSE_NODE2_PORT
do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v: a whole number, not '${!v}'"
done
for v in SSE_RATE SSE_SCALE_RATE; do
    [[ ${!v} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$v: a number, not '${!v}'"
done
[ "$SSE_M" -ge 1 ] || die "SSE_M: at least 1"

TARGETS=()
for t in ${SSE_TARGET//,/ }; do
    case $t in
        room | diag) TARGETS+=("$t") ;;
        *) die "SSE_TARGET: room, diag or both (room,diag), not '$t'" ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || die "SSE_TARGET is empty"

target() {
    case " ${TARGETS[*]} " in *" $1 "*) return 0 ;; esac
    return 1
}


# standalone: save what is printed; under bench/run.sh the caller does
if [ -z "${BENCH_RESULT_FILE:-}" ] && [ -z "${SSE_SAVING:-}" ]; then
    mkdir -p "$HERE/results"
    file=$HERE/results/sse-$(date -u +%Y%m%dT%H%M%SZ).txt
    rc=0
    SSE_SAVING=1 "$SELF" "$@" 2>&1 | tee "$file" || rc=$?
    [ "${PIPESTATUS[0]}" = 0 ] || rc=${PIPESTATUS[0]}
    echo "saved: ${file#"$TOP"/}" >&2
    exit "$rc"
fi


# ---------------------------------------------------------------- set-up

mkdir -p "$SSE_WORK"
TMPD=$(mktemp -d "$SSE_WORK/run.XXXXXX")
STARTED=()

cleanup() {
    local p pid

    for p in "${STARTED[@]}"; do
        [ -f "$p/logs/nginx.pid" ] || continue
        pid=$(cat "$p/logs/nginx.pid")
        kill -QUIT "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    done

    rm -rf "$TMPD"
}
trap cleanup EXIT

command -v cc >/dev/null \
    || die "no C compiler (./build.sh deps installs build-essential)"

cc -O2 -Wall -Wextra -Werror -o "$CLIENT.new" "$HERE/sse/sse-fanout.c" -lm \
    || die "building bench/sse/sse-fanout.c failed"
mv "$CLIENT.new" "$CLIENT"
cc -O2 -Wall -Wextra -Werror -o "$FLOOR.new" "$HERE/sse/sse-floor.c" \
    || die "building bench/sse/sse-floor.c failed"
mv "$FLOOR.new" "$FLOOR"

# the client needs a descriptor per stream (and a few), so do the nginx
# workers (all streams may land on one): the private ones and a stack
# started from here inherit this limit
MAXN=0
for n in "${SIZES[@]}" "$SSE_SCALE_N" "$SSE_NODES_N"; do
    [ "$n" -gt "$MAXN" ] && MAXN=$n
done
need=$((MAXN + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    if ! ulimit -n "$need" 2>/dev/null; then
        # the hard limit too, which root may raise where it has
        # CAP_SYS_RESOURCE
        ulimit -Hn "$need" 2>/dev/null && ulimit -n "$need" 2>/dev/null \
            || die "$MAXN streams need $need open files; the hard" \
                   "limit is $(ulimit -Hn) and cannot be raised here:" \
                   "use fewer streams (SSE_N, SSE_SCALE_N, SSE_NODES_N)"
    fi
fi
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=$((MAXN + 4096))

# the stack: its Redis is used by every side, its nginx by room
log "starting the stack (CHAT_RATE_LIMIT=0 ./build.sh run)"
if ! CHAT_RATE_LIMIT=0 "$TOP/build.sh" run > "$TMPD/build.log" 2>&1; then
    cat "$TMPD/build.log" >&2
    die "./build.sh run failed"
fi

REDIS_PID=$(store_pid "$WORK/run/redis.pid" "$CHAT_REDIS_PORT")
[ -n "$REDIS_PID" ] || die "no redis-server on port $CHAT_REDIS_PORT"


# nchan from Debian, installed here when missing (not a build dependency)
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! dpkg-query -W -f='${Status}' libnginx-mod-nchan 2>/dev/null \
        | grep -q 'install ok installed'
then
    log "apt-get install libnginx-mod-nchan (the baseline)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends libnginx-mod-nchan \
            > "$TMPD/apt.log" 2>&1 \
        || { apt-get update -qq > "$TMPD/apt.log" 2>&1 \
             && apt-get install -y -qq --no-install-recommends \
                    libnginx-mod-nchan >> "$TMPD/apt.log" 2>&1; } \
        || { cat "$TMPD/apt.log" >&2
             die "cannot install libnginx-mod-nchan"; }
fi
[ -f "$NCHAN_SO" ] || die "$NCHAN_SO is missing"
NCHAN_VERSION=$(dpkg-query -W -f='${Version}' libnginx-mod-nchan)


# ---------------------------------------------------------------- helpers

# first_id JSON: the value of the first "id" key (a number)
first_id() {
    echo "$1" | grep -o '"id" *: *[0-9]*' | head -1 | grep -o '[0-9]*$' || true
}

# calc EXPR [VAR=value...]: an awk expression over the variables, three
# decimals; "?" when one is not a number or the expression gives "nan"
# (its own guard against a zero divisor)
calc() {
    local expr=$1 a=() v
    shift

    for v in "$@"; do
        [[ ${v#*=} =~ ^-?[0-9]+(\.[0-9]+)?$ ]] || { echo "?"; return 0; }
        a+=(-v "$v")
    done
    awk "${a[@]}" "BEGIN { r = $expr;
        if (r == \"nan\") print \"?\"; else printf \"%.3f\n\", r }"
}

# ratio A B: A / B
ratio() {
    calc 'b == 0 ? "nan" : a / b' a="$1" b="$2"
}

# per_stream BEFORE AFTER STREAMS: kB of growth as bytes per stream
per_stream() {
    calc 'n > 0 ? (y - x) * 1024 / n : "nan"' x="$1" y="$2" n="$3"
}

# a private nginx: start_private <prefix> <port> writes the conf given
# on stdin (with @PREFIX@) or, when that is empty, keeps the conf/ it
# finds; then starts it and waits for the port
start_private() {
    local prefix=$1 port=$2 conf

    if [ -f "$prefix/logs/nginx.pid" ] \
        && kill -0 "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null
    then
        kill -QUIT "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null || true
        sleep 1
    fi

    conf=$(sed "s|@PREFIX@|$prefix|g")
    if [ -n "$conf" ]; then
        rm -rf "$prefix"
        mkdir -p "$prefix/conf"
        printf '%s\n' "$conf" > "$prefix/conf/nginx.conf"
    fi
    rm -rf "$prefix/logs" "$prefix/tmp"
    mkdir -p "$prefix/logs" "$prefix/tmp"

    "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log -t -q \
        || die "nginx -t failed for $prefix/conf/nginx.conf"
    "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log \
        || die "nginx did not start in $prefix (see $prefix/logs/error.log)"
    STARTED+=("$prefix")

    for _ in $(seq 1 100); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
            return 0
        fi
        sleep 0.1
    done
    die "nginx in $prefix does not answer on port $port"
}

stop_private() {
    "$NGINX" -p "$1/" -c conf/nginx.conf -s quit 2>/dev/null || true
}

# what each private side's config shares with the stack's: 2 workers,
# the same connection limits, no access log (the stack logs; a stream is
# one line per connection, written at its end, after the measurements)
private_main() {
    cat <<EOF
worker_processes  2;
worker_rlimit_nofile  $NOFILE;
pid        @PREFIX@/logs/nginx.pid;
error_log  @PREFIX@/logs/error.log notice;

events {
    worker_connections  16384;
}
EOF
}

private_http() {
    cat <<'EOF'
    client_body_temp_path  @PREFIX@/tmp/body;
    proxy_temp_path        @PREFIX@/tmp/proxy;
    fastcgi_temp_path      @PREFIX@/tmp/fastcgi;
    uwsgi_temp_path        @PREFIX@/tmp/uwsgi;
    scgi_temp_path         @PREFIX@/tmp/scgi;
    access_log  off;
    keepalive_timeout  65;
EOF
}

# a data object shaped like the room stream's new_message (C10), so each
# side sends frames of about the same size
payload() {
    printf '{"id": "%s", "user_id": 1, "username": "%s", ' \
        65a1b2c3d4e5f60718293a4b bench_user
    printf '"room_id": 1, "content": "t=%%T seq=%%S", "message_type": "text", '
    printf '"created_at": "2026-01-01T00:00:00.000000", "is_deleted": false}'
}

pace() {
    if [ "$1" = 0 ]; then echo "back to back"; else echo "$1/s"; fi
}

wait_ping() {
    for _ in $(seq 1 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
             "http://127.0.0.1:$1/ping" || true)" = 200 ] && return 0
        sleep 0.2
    done
    die "nothing answers GET /ping on port $1"
}

# fresh_stack: the stack's nginx reloaded, so that a room run starts on
# new workers as the private sides do; waits until the old ones are gone
# (their streams were closed) and the new ones answer
fresh_stack() {
    local master old alive p

    master=$(cat "$STACK/logs/nginx.pid")
    old=$(ps -o pid= --ppid "$master" | tr -d ' ' | paste -sd' ')
    "$NGINX" -p "$STACK/" -c conf/nginx.conf -e logs/error.log -s reload \
        || die "nginx -s reload failed for $STACK"

    for _ in $(seq 1 150); do
        alive=
        for p in $old; do
            kill -0 "$p" 2>/dev/null && alive=1
        done
        [ -z "$alive" ] && break
        sleep 0.1
    done

    wait_ping "$CHAT_HTTP_PORT"
    # the new workers' Redis subscriptions and datastore connections
    sleep 1
}

# check_nofile MASTER STREAMS: each worker may need a descriptor per
# stream; a running stack keeps the limit of the shell that started it
check_nofile() {
    local master=$1 need=$(($2 + 256)) pid args lim

    while read -r pid args; do
        [ "$args" = "nginx: worker process" ] || continue
        lim=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
        [ "$lim" = unlimited ] || [ "$lim" -ge "$need" ] \
            || die "the nginx worker $pid may open $lim files, $2 streams" \
                   "need $need: restart the stack (./build.sh stop) from a" \
                   "shell with ulimit -n $need or more"
    done < <(ps -o pid=,args= --ppid "$master")
}

TICK_US=$((1000000 / CLK_TCK))

declare -A RES MEM CPU     # by "<label>@<streams>": the runs' lines

# measure LABEL STREAMS MESSAGES RATE TITLE MASTER CLIENT-ARGS...: one
# client run with the samples around it (memory and CPU of MASTER's
# workers and of Redis; none when MASTER is -)
measure() {
    local label=$1 n=$2 m=$3 rate=$4 title=$5 master=$6
    local key=$1@$2 samples out rc=0 result hook=() ready recv
    local b c p d rss_c pss_c rss_d pss_d w r mem cpu
    shift 6

    samples=$TMPD/samples-$label-$n
    : > "$samples"

    if [ "$master" != - ]; then
        # the new workers of a reload, not the old ones
        for _ in $(seq 1 50); do
            [ "$(sample "$master" | cut -d' ' -f3)" -ge 1 ] && break
            sleep 0.1
        done
        check_nofile "$master" "$n"
        echo "before $(sample "$master") $(cpu_ticks "$REDIS_PID")" \
            >> "$samples"
        hook=(--hook "$SELF sample $master $REDIS_PID $samples")
    fi

    echo "=== $title: $n streams, $m messages ($(pace "$rate"))"
    out=$("$CLIENT" -n "$n" -m "$m" -r "$rate" -t "$SSE_TIMEOUT" \
              -l "$label" "${hook[@]}" "$@" 2>&1) || rc=$?
    echo "$out"

    result=$(echo "$out" | grep '^RESULT ' | tail -1 || true)
    [ -n "$result" ] || result="RESULT label=$label"
    RES[$key]=$result

    if [ $rc -ne 0 ]; then
        FAILED+=("$label, $n streams: $(field received "$result") of"\
" $(field expected "$result") deliveries,"\
" $(field duplicates "$result") duplicates,"\
" $(field publish_err "$result") publish errors,"\
" $(field failed "$result") streams failed (client exit $rc)")
    fi

    if [ "$master" = - ]; then
        echo
        return 0
    fi

    # "<rss kB> <pss kB> <workers> <ticks> <redis ticks>" of each phase
    read -r -a b <<< "$(awk '$1 == "before" { $1 = ""; print }' "$samples")"
    read -r -a c <<< "$(awk '$1 == "connected" { $1 = ""; print }' "$samples")"
    read -r -a p <<< "$(awk '$1 == "publish" { $1 = ""; print }' "$samples")"
    read -r -a d <<< "$(awk '$1 == "delivered" { $1 = ""; print }' "$samples")"
    ready=$(field ready "$result")
    recv=$(field received "$result")

    rss_c=$(per_stream "${b[0]:-}" "${c[0]:-}" "$ready")
    pss_c=$(per_stream "${b[1]:-}" "${c[1]:-}" "$ready")
    rss_d=$(per_stream "${b[0]:-}" "${d[0]:-}" "$ready")
    pss_d=$(per_stream "${b[1]:-}" "${d[1]:-}" "$ready")
    [ "$pss_c" != "?" ] && [ "$pss_d" != "?" ] \
        || FAILED+=("$label, $n streams: no memory samples")

    # CPU from the last warm-up delivery to the last measured one
    w=$(calc 'y - x' x="${p[3]:-}" y="${d[3]:-}")
    r=$(calc 'y - x' x="${p[4]:-}" y="${d[4]:-}")
    [ "$w" != "?" ] || FAILED+=("$label, $n streams: no CPU samples")
    w=${w%.000}
    r=${r%.000}

    mem="MEM label=$label streams=$ready workers=${b[2]:-?}"
    mem+=" before_rss_kb=${b[0]:-?} before_pss_kb=${b[1]:-?}"
    mem+=" open_rss_kb=${c[0]:-?} open_pss_kb=${c[1]:-?}"
    mem+=" delivered_rss_kb=${d[0]:-?} delivered_pss_kb=${d[1]:-?}"
    mem+=" open_rss_b=${rss_c%.*} open_pss_b=${pss_c%.*}"
    mem+=" delivered_rss_b=${rss_d%.*} delivered_pss_b=${pss_d%.*}"
    MEM[$key]=$mem

    cpu="CPU label=$label streams=$ready events=$recv messages=$m"
    cpu+=" nginx_ticks=$w redis_ticks=$r tick_us=$TICK_US"
    cpu+=" nginx_us_event=$(calc 'e > 0 ? t * u / e : "nan"' \
                                 t="$w" u="$TICK_US" e="$recv")"
    cpu+=" redis_us_event=$(calc 'e > 0 ? t * u / e : "nan"' \
                                 t="$r" u="$TICK_US" e="$recv")"
    cpu+=" nginx_us_msg=$(calc 't * u / m' t="$w" u="$TICK_US" m="$m")"
    cpu+=" redis_us_msg=$(calc 't * u / m' t="$r" u="$TICK_US" m="$m")"
    CPU[$key]=$cpu

    echo "memory (workers, kB): before: Rss ${b[0]:-?} Pss ${b[1]:-?};" \
         "streams open: Rss ${c[0]:-?} Pss ${c[1]:-?};" \
         "after delivery: Rss ${d[0]:-?} Pss ${d[1]:-?}"
    echo "memory per stream:    open: Pss ${pss_c%.*} B (Rss ${rss_c%.*} B);" \
         "after delivery: Pss ${pss_d%.*} B (Rss ${rss_d%.*} B)"
    echo "CPU, first to last measured message: nginx workers $w ticks," \
         "redis-server $r ticks ($TICK_US us each)"
    echo "$mem"
    echo "$cpu"
    echo
}


# ---------------------------------------------------------------- the sides

RUN_ID=$(date -u +%H%M%S)$$
DATA=$(payload)
ROOM=
TOKEN_A=
TOKEN_B=

# two users and their room: A sends, the streams are B's
room_setup() {
    local code out status email pw bid= tok who

    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
           "$BASE/api/messages/stream/1" || true)
    [ "$code" = 401 ] \
        || die "GET /api/messages/stream/1 answers $code, not 401:" \
               "the stack does not route the room stream"

    pw="Bench#${RANDOM}x"

    for who in a b; do
        email="sse.$who.$RUN_ID@example.com"
        out=$(curl -s --max-time 30 -w '\n%{http_code}' \
              -H 'Content-Type: application/json' \
              -d "{\"email\":\"$email\",\"username\":\"sse_${who}_$RUN_ID\",\
\"password\":\"$pw\"}" \
              "$BASE/api/auth/register") || die "register: curl failed"
        status=${out##*$'\n'}
        [ "$status" = 201 ] || die "register answered $status: ${out%$'\n'*}"
        [ $who = b ] && bid=$(first_id "${out%$'\n'*}")

        out=$(curl -s --max-time 30 -w '\n%{http_code}' \
              -H 'Content-Type: application/json' \
              -d "{\"email\":\"$email\",\"password\":\"$pw\"}" \
              "$BASE/api/auth/login/json") || die "login: curl failed"
        status=${out##*$'\n'}
        [ "$status" = 200 ] || die "login answered $status: ${out%$'\n'*}"
        tok=$(echo "${out%$'\n'*}" \
              | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
        [ -n "$tok" ] || die "no access_token in the login answer"
        if [ $who = a ]; then TOKEN_A=$tok; else TOKEN_B=$tok; fi
    done

    [ -n "$bid" ] || die "no id in the register answer"

    out=$(curl -s --max-time 30 -w '\n%{http_code}' \
          -H "Authorization: Bearer $TOKEN_A" \
          "$BASE/api/chat-rooms/check/$bid") || die "room: curl failed"
    status=${out##*$'\n'}
    [ "$status" = 200 ] \
        || die "GET /api/chat-rooms/check/$bid answered $status: ${out%$'\n'*}"
    ROOM=$(first_id "${out%$'\n'*}")
    [ -n "$ROOM" ] || die "no room id in ${out%$'\n'*}"

    echo "room: $ROOM (user sse_a_$RUN_ID sends, the streams are" \
         "sse_b_$RUN_ID's)"
    echo
}

# the room's stream and send requests, for the client
room_args() {
    ROOM_ARGS=(-u "/api/messages/stream/$ROOM?access_token=$TOKEN_B"
               -P "/api/messages/$ROOM" -X "Authorization: Bearer $TOKEN_A"
               -b '{"content":"t=%T seq=%S"}' --ready connected)
}

# run_room LABEL STREAMS MESSAGES RATE TITLE: on fresh workers
run_room() {
    fresh_stack
    measure "$@" "$(cat "$STACK/logs/nginx.pid")" -p "$CHAT_HTTP_PORT" \
        "${ROOM_ARGS[@]}"
}

run_diag() {
    local n=$1 prefix=$WORK/bench-diag
    local so=$WORK/build/ngx_http_chat_core_module.so

    [ -f "$so" ] || die "$so is missing (./build.sh build)"

    {
        echo "load_module $so;"
        private_main
        echo "http {"
        private_http
        cat <<EOF
    chat_redis  127.0.0.1:$CHAT_REDIS_PORT;
    chat_jwt_secret  "bench-sse-diagnostics";
    chat_development  on;

    server {
        listen  127.0.0.1:$SSE_DIAG_PORT;
        location /diag/ { chat_diagnostics; }
        location / { return 404; }
    }
}
EOF
    } | start_private "$prefix" "$SSE_DIAG_PORT"

    measure diag "$n" "$SSE_M" "$SSE_RATE" \
        "nginx-chat: core SSE hub (chat_diagnostics, :$SSE_DIAG_PORT)" \
        "$(cat "$prefix/logs/nginx.pid")" \
        -p "$SSE_DIAG_PORT" \
        -u "/diag/stream/sse$RUN_ID" -P "/diag/publish/sse$RUN_ID" \
        -b "{\"event\":\"new_message\",\"id\":\"%S\",\"data\":$DATA}" \
        --ready connected

    stop_private "$prefix"
}

run_nchan() {
    local n=$1 prefix=$WORK/bench-nchan store pass=""

    case $SSE_NCHAN_STORE in
        memory) store="" ;;
        *)      store="    upstream bench_nchan_redis {
        nchan_redis_server  redis://127.0.0.1:$CHAT_REDIS_PORT;
        nchan_redis_storage_mode  $SSE_NCHAN_STORE;
        nchan_redis_namespace  \"bench-nchan\";
    }"
                pass="nchan_redis_pass  bench_nchan_redis;" ;;
    esac

    {
        echo "load_module $NCHAN_SO;"
        private_main
        echo "http {"
        private_http
        cat <<EOF
$store

    server {
        listen  127.0.0.1:$SSE_NCHAN_PORT;

        location ~ ^/sub/(\w+)$ {
            nchan_subscriber  eventsource;
            nchan_channel_id  \$1;
            nchan_subscriber_first_message  newest;
            $pass
        }

        location ~ ^/pub/(\w+)$ {
            nchan_publisher  http;
            nchan_channel_id  \$1;
            nchan_eventsource_event  new_message;
            nchan_message_buffer_length  10;
            nchan_message_timeout  60s;
            $pass
        }

        location / { return 404; }
    }
}
EOF
    } | start_private "$prefix" "$SSE_NCHAN_PORT"

    # with Redis, the workers report ready once connected
    sleep 0.5

    measure nchan "$n" "$SSE_M" "$SSE_RATE" \
        "nchan $NCHAN_VERSION ($SSE_NCHAN_STORE, :$SSE_NCHAN_PORT)" \
        "$(cat "$prefix/logs/nginx.pid")" \
        -p "$SSE_NCHAN_PORT" \
        -u "/sub/sse$RUN_ID" -P "/pub/sse$RUN_ID" \
        -b "$DATA" --ready ''

    stop_private "$prefix"
}

run_floor() {
    local n=$1 prefix=$WORK/bench-floor

    rm -rf "$prefix"
    mkdir -p "$prefix/logs"
    STARTED+=("$prefix")

    "$FLOOR" -p "$SSE_FLOOR_PORT" -r "$CHAT_REDIS_PORT" -c "floor$RUN_ID" \
        -w 2 -g "$prefix/logs/nginx.pid" &
    for _ in $(seq 1 50); do
        [ -s "$prefix/logs/nginx.pid" ] \
            && (exec 3<> "/dev/tcp/127.0.0.1/$SSE_FLOOR_PORT") 2>/dev/null \
            && break
        sleep 0.1
    done
    [ -s "$prefix/logs/nginx.pid" ] || die "the floor server did not start"
    # its workers' subscriptions
    sleep 0.5

    measure floor "$n" "$SSE_M" "$SSE_RATE" \
        "floor: a send() per stream and message (:$SSE_FLOOR_PORT)" \
        "$(cat "$prefix/logs/nginx.pid")" \
        -p "$SSE_FLOOR_PORT" -u "/sub" -P "/pub" -b "$DATA" \
        --ready connected

    kill -TERM "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
}

# the second node: the configuration build.sh rendered for the stack,
# with a prefix and listeners of its own (the datastores are the same),
# started as build.sh starts the stack's nginx
NODE2=$WORK/bench-node2

start_node2() {
    local i=0 from to edits=(-e "s|$STACK/|$NODE2/|g")

    rm -rf "$NODE2"
    mkdir -p "$NODE2/conf"
    cp "$STACK"/conf/*.conf "$NODE2/conf/"

    for from in "$CHAT_HTTP_PORT" "$CHAT_USER_PORT" "$CHAT_FRIEND_PORT" \
                "$CHAT_MSG_PORT" "$CHAT_NOTIFY_PORT"
    do
        to=$((SSE_NODE2_PORT + i))
        edits+=(-e "s|127\.0\.0\.1:$from\([^0-9]\)|127.0.0.1:$to\1|g")
        i=$((i + 1))
    done
    sed -i "${edits[@]}" "$NODE2/conf/nginx.conf"

    start_private "$NODE2" "$SSE_NODE2_PORT" < /dev/null
    wait_ping "$SSE_NODE2_PORT"
    # its workers' Redis subscriptions
    sleep 1
}


# ---------------------------------------------------------------- run

echo "=== SSE fan-out: ${SIZES[*]} streams on one channel, $SSE_M messages" \
     "($(pace "$SSE_RATE")) each, 1 unmeasured warm-up message"
if [ -z "${BENCH_RESULT_FILE:-}" ]; then
    echo "date:   $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(
        git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$TOP" diff --quiet HEAD 2>/dev/null \
            || echo ' (with local changes)')"
fi
echo "nginx:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')," \
     "2 workers on each side; nchan $NCHAN_VERSION, storage $SSE_NCHAN_STORE"
echo "client: bench/sse/sse-fanout.c, one epoll thread, on the same" \
     "$(nproc) cores; $NOFILE open files"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before)"
echo

START=$(now)

if target room; then
    room_setup
    room_args
    run_room post 1 "$SSE_M" "$SSE_RATE" \
        "nginx-chat: room stream, one stream (what the POSTs cost)"
fi

for n in "${SIZES[@]}"; do
    if target room; then
        run_room room "$n" "$SSE_M" "$SSE_RATE" \
            "nginx-chat: room stream (C10/C4, gateway :$CHAT_HTTP_PORT)"
    fi
    if target diag; then
        run_diag "$n"
    fi
    run_nchan "$n"
    run_floor "$n"
done

if target room && [ "$SSE_SCALE_N" -gt 0 ]; then
    run_room scale "$SSE_SCALE_N" "$SSE_SCALE_M" "$SSE_SCALE_RATE" \
        "scale: room stream"
fi

if target room && [ "$SSE_NODES_N" -gt 0 ]; then
    start_node2
    measure nodes "$SSE_NODES_N" "$SSE_NODES_M" "$SSE_RATE" \
        "two nodes: room stream, every other one on :$SSE_NODE2_PORT" - \
        -p "$CHAT_HTTP_PORT" --split-port "$SSE_NODE2_PORT" "${ROOM_ARGS[@]}"
    stop_private "$NODE2"
fi


# ---------------------------------------------------------------- summary

# the room's CPU per event without the POSTs': the room run's less the
# one-stream run's, over the deliveries beyond that run's one a message
fanout_us() {
    local what=$1 n=$2

    calc 'e > f ? (x - y) * u / (e - f) : "nan"' \
        x="$(field "${what}_ticks" "${CPU[room@$n]:-}")" \
        y="$(field "${what}_ticks" "${CPU[post@1]:-}")" u="$TICK_US" \
        e="$(field events "${CPU[room@$n]:-}")" \
        f="$(field events "${CPU[post@1]:-}")"
}

row() {
    printf '%-6s %15s %8s %8s %8s %8s %9s %9s %9s %9s %9s %7s\n' "$@"
}

# of LABEL N KEY: KEY of the run's RESULT, MEM or CPU line
of() {
    field "$3" "${RES[$1@$2]:-} ${MEM[$1@$2]:-} ${CPU[$1@$2]:-}"
}

# the client's CPU over the measured span: near 1, it is the client's
# pace that the latencies show
client_share() {
    calc 's > 0 ? c / s : "nan"' c="$(of "$1" "$2" client_cpu_s)" \
        s="$(of "$1" "$2" client_span_s)"
}

GOALS=()

echo "=== summary"
echo
for n in "${SIZES[@]}"; do
    echo "--- $n streams, $SSE_M messages ($(pace "$SSE_RATE"))"
    row side deliveries p50_ms p90_ms p99_ms max_ms "B/stream" "B/stream" \
        "nginx us" "redis us" "redis us" client
    row "" "" "" "" "" "" "open" "after" "/event" "/event" "/message" \
        "cores"
    for label in room diag nchan floor; do
        [ -n "${RES[$label@$n]:-}" ] || continue
        row "$label" "$(of $label "$n" received)/$(of $label "$n" expected)" \
            "$(of $label "$n" p50_ms)" "$(of $label "$n" p90_ms)" \
            "$(of $label "$n" p99_ms)" "$(of $label "$n" max_ms)" \
            "$(of $label "$n" open_pss_b)" "$(of $label "$n" delivered_pss_b)" \
            "$(of $label "$n" nginx_us_event)" \
            "$(of $label "$n" redis_us_event)" \
            "$(of $label "$n" redis_us_msg)" "$(client_share $label "$n")"
    done

    fo=?
    if [ -n "${RES[room@$n]:-}" ]; then
        fo=$(fanout_us nginx "$n")
        echo "room's fan-out alone (the one-stream run subtracted): nginx" \
             "$fo us, redis $(fanout_us redis "$n") us per event"
    fi

    for label in room diag; do
        [ -n "${RES[$label@$n]:-}" ] || continue
        cpu=$(of $label "$n" nginx_us_event)
        [ $label = room ] && cpu=$fo
        echo "$label / nchan: memory per stream open" \
             "$(ratio "$(of $label "$n" open_pss_b)" \
                      "$(of nchan "$n" open_pss_b)"), after delivery" \
             "$(ratio "$(of $label "$n" delivered_pss_b)" \
                      "$(of nchan "$n" delivered_pss_b)");" \
             "nginx CPU per event" \
             "$(ratio "$cpu" "$(of nchan "$n" nginx_us_event)"), redis" \
             "$(ratio "$(of $label "$n" redis_us_event)" \
                      "$(of nchan "$n" redis_us_event)");" \
             "latency p50 $(ratio "$(of $label "$n" p50_ms)" \
                                  "$(of nchan "$n" p50_ms)"), p99" \
             "$(ratio "$(of $label "$n" p99_ms)" "$(of nchan "$n" p99_ms)")"
    done
    if [ -n "${RES[floor@$n]:-}" ]; then
        fl=$(of floor "$n" nginx_us_event)
        echo "above the floor (CPU per event less the floor's $fl us):" \
             "room $(calc 'a - b' a="$fo" b="$fl")," \
             "diag $(calc 'a - b' a="$(of diag "$n" nginx_us_event)" \
                                  b="$fl")," \
             "nchan $(calc 'a - b' a="$(of nchan "$n" nginx_us_event)" \
                                   b="$fl") us"
    fi
    echo

    if [ -n "${RES[room@$n]:-}" ]; then
        GOALS+=("$(goal "sse_mem_open_$n" \
            "$(ratio "$(of room "$n" open_pss_b)" \
                     "$(of nchan "$n" open_pss_b)")" le 0.5 \
            "memory per open stream (workers' Pss), ours/nchan, $n streams")")
        GOALS+=("$(goal "sse_cpu_event_$n" \
            "$(ratio "$fo" "$(of nchan "$n" nginx_us_event)")" le 0.5 \
            "nginx-worker CPU per delivered event, ours (POSTs apart)/nchan,\
 $n streams")")
        if [ -n "${RES[floor@$n]:-}" ]; then
            GOALS+=("$(goal "sse_cpu_above_floor_$n" \
                "$(calc 'c > f ? (a - f) / (c - f) : "nan"' a="$fo" \
                        c="$(of nchan "$n" nginx_us_event)" \
                        f="$(of floor "$n" nginx_us_event)")" le 0.5 \
                "nginx-worker CPU per event above the floor's (a bare send()\
 per stream), ours/nchan, $n streams")")
        fi
        GOALS+=("$(goal "sse_p99_$n" \
            "$(ratio "$(of room "$n" p99_ms)" "$(of nchan "$n" p99_ms)")" \
            le 1 "delivery latency p99, ours/nchan, $n streams at\
 $(pace "$SSE_RATE")")")
    fi
done

if [ -n "${RES[post@1]:-}" ]; then
    echo "--- the POSTs (one stream, $SSE_M messages, $(pace "$SSE_RATE")):" \
         "nginx $(of post 1 nginx_us_msg) us, redis $(of post 1 redis_us_msg)" \
         "us per message; POST p50 $(of post 1 post_p50_ms) ms," \
         "p99 $(of post 1 post_p99_ms) ms"
    echo
fi

n=$SSE_SCALE_N
if [ -n "${RES[scale@$n]:-}" ]; then
    echo "--- scale: $n streams, $SSE_SCALE_M messages" \
         "($(pace "$SSE_SCALE_RATE"))"
    echo "deliveries $(of scale "$n" received)/$(of scale "$n" expected);" \
         "p50 $(of scale "$n" p50_ms) ms, p99 $(of scale "$n" p99_ms) ms," \
         "max $(of scale "$n" max_ms) ms; memory per stream open" \
         "$(of scale "$n" open_pss_b) B, after delivery" \
         "$(of scale "$n" delivered_pss_b) B; nginx" \
         "$(of scale "$n" nginx_us_event) us per event"
    echo
    GOALS+=("$(goal sse_scale_p99 "$(of scale "$n" p99_ms)" le \
        "$SSE_SCALE_P99" \
        "delivery latency p99 (ms), $n streams, $SSE_SCALE_M messages at\
 $(pace "$SSE_SCALE_RATE")")")
fi

n=$SSE_NODES_N
if [ -n "${RES[nodes@$n]:-}" ]; then
    echo "--- two nodes: $n streams, every other one on the second," \
         "$SSE_NODES_M messages ($(pace "$SSE_RATE")) sent to the first"
    echo "deliveries $(of nodes "$n" received)/$(of nodes "$n" expected)" \
         "(to the second node's streams: $(of nodes "$n" split_received)/$(
         of nodes "$n" split_expected)), duplicates" \
         "$(of nodes "$n" duplicates); p50 $(of nodes "$n" p50_ms) ms," \
         "p99 $(of nodes "$n" p99_ms) ms, max $(of nodes "$n" max_ms) ms"
    echo
    GOALS+=("$(goal sse_two_nodes "$(of nodes "$n" received)" ge \
        "$(of nodes "$n" expected)" \
        "deliveries, $n streams half on each of two nodes, $SSE_NODES_M\
 messages sent to one (p99 $(of nodes "$n" p99_ms) ms)")")
fi

for l in "${GOALS[@]}"; do
    echo "$l"
done
echo
echo "(ratios below 1: nginx-chat is faster or smaller than nchan)"
echo "took:   $(since "$START") s"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, after)"

if [ ${#FAILED[@]} -gt 0 ]; then
    echo
    echo "FAILED:"
    printf '  %s\n' "${FAILED[@]}"
    exit 1
fi
