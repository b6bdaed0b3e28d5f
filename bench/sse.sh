#!/usr/bin/env bash
#
# SSE fan-out benchmark: N streams on one channel, M messages published,
# delivery latency from send to receipt over every stream, and nginx
# memory per open stream; the same client, in the same run, against
# Debian's nchan (libnginx-mod-nchan) set up as the equivalent pub/sub on
# this machine; both side by side with their ratios.
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
#
# Memory: the sum of Rss and Pss of the nginx workers (/proc/<pid>/
# smaps_rollup) before the streams open, once all are open, and once
# every message was delivered (the streams still open); per stream is
# the growth over N.  Private nginx instances start fresh for each run;
# the stack's nginx is reloaded by ./build.sh run, so its workers are
# fresh too.
#
# Environment (defaults in brackets):
#   SSE_TARGET        room | diag | room,diag: the nginx-chat side(s) [room]
#                     (room falls back to diag, saying so, while the
#                     stack does not route the room stream yet)
#   SSE_N             streams [5000]
#   SSE_M             measured messages [100]
#   SSE_RATE          messages per second; 0: each POST right after the
#                     previous one's response [5]
#   SSE_TIMEOUT       seconds to wait for deliveries after the last
#                     publish [15]
#   SSE_NCHAN_STORE   nostore | distributed | memory: nchan's storage
#                     [nostore: Redis as a pub/sub bus only, as the hub]
#   SSE_DIAG_PORT     port of the private diagnostics nginx
#                     [CHAT_HTTP_PORT + 10410: 18490]
#   SSE_NCHAN_PORT    port of the private nchan nginx
#                     [CHAT_HTTP_PORT + 10411: 18491]
#   CHAT_HTTP_PORT, CHAT_REDIS_PORT, CHAT_WORK, ...: as build.sh
#
# Output: the client's report for each side, memory lines, a summary
# table and the ratios; saved to bench/results/sse-<UTC timestamp>.txt
# (unless BENCH_RESULT_FILE names the file a caller saves it to).
# Exit status: 0, or 1 when a run lost messages, saw errors or could not
# be measured.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
WORK=${CHAT_WORK:-$TOP/.work}
NGINX=${CHAT_NGINX_BINARY:-/usr/sbin/nginx}


# ---------------------------------------------------------------- memory

# the nginx workers of a master (not old ones shutting down):
# "<rss kB> <pss kB> <workers>"
mem_sample() {
    local master=$1 pid args rss=0 pss=0 n=0 r p

    while read -r pid args; do
        [ "$args" = "nginx: worker process" ] || continue
        read -r r p < <(awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 }
                             END { print r + 0, p + 0 }' \
                            "/proc/$pid/smaps_rollup" 2>/dev/null \
                        || echo "0 0")
        rss=$((rss + r))
        pss=$((pss + p))
        n=$((n + 1))
    done < <(ps -o pid=,args= --ppid "$master" 2>/dev/null)

    echo "$rss $pss $n"
}

# the client's hook: sse.sh mem <master pid> <file> <phase>
if [ "${1:-}" = mem ]; then
    echo "$4 $(mem_sample "$2")" >> "$3"
    exit 0
fi


# ---------------------------------------------------------------- settings

: "${SSE_TARGET:=room}"
: "${SSE_N:=5000}"
: "${SSE_M:=100}"
: "${SSE_RATE:=5}"
: "${SSE_TIMEOUT:=15}"
: "${SSE_NCHAN_STORE:=nostore}"
: "${CHAT_HTTP_PORT:=8080}"
: "${CHAT_REDIS_PORT:=16379}"
# the private servers' ports follow the gateway's, so that the benchmark
# of a stack on other ports does not collide with one on the defaults
: "${SSE_DIAG_PORT:=$((CHAT_HTTP_PORT + 10410))}"
: "${SSE_NCHAN_PORT:=$((CHAT_HTTP_PORT + 10411))}"

BASE=http://127.0.0.1:$CHAT_HTTP_PORT
SSE_WORK=$WORK/bench-sse
CLIENT=$SSE_WORK/sse-fanout

log() { printf '>>> %s\n' "$*" >&2; }
die() { printf 'bench/sse.sh: %s\n' "$*" >&2; exit 1; }

case $SSE_NCHAN_STORE in
    nostore | distributed | memory) ;;
    *) die "SSE_NCHAN_STORE: nostore, distributed or memory," \
           "not '$SSE_NCHAN_STORE'" ;;
esac

for v in SSE_N SSE_M SSE_TIMEOUT SSE_DIAG_PORT SSE_NCHAN_PORT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v: a whole number, not '${!v}'"
done
[[ $SSE_RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] \
    || die "SSE_RATE: a number, not '$SSE_RATE'"
[ "$SSE_N" -ge 1 ] || die "SSE_N: at least 1"

TARGETS=()
for t in ${SSE_TARGET//,/ }; do
    case $t in
        room | diag) TARGETS+=("$t") ;;
        *) die "SSE_TARGET: room, diag or both (room,diag), not '$t'" ;;
    esac
done
[ ${#TARGETS[@]} -gt 0 ] || die "SSE_TARGET is empty"


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

# the client needs a descriptor per stream (and a few), so do the
# private nginx workers (all streams may land on one)
need=$((SSE_N + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    if ! ulimit -n "$need" 2>/dev/null; then
        # the hard limit too, which root may raise where it has
        # CAP_SYS_RESOURCE
        ulimit -Hn "$need" 2>/dev/null && ulimit -n "$need" 2>/dev/null \
            || die "SSE_N=$SSE_N needs $need open files; the hard" \
                   "limit is $(ulimit -Hn) and cannot be raised here:" \
                   "use SSE_N <= $(( $(ulimit -Hn) - 256 ))"
    fi
fi
NOFILE=$(ulimit -n)
[ "$NOFILE" = unlimited ] && NOFILE=$((SSE_N + 4096))

# the stack: its Redis is used by every side, its nginx by room
log "starting the stack (CHAT_RATE_LIMIT=0 ./build.sh run)"
if ! CHAT_RATE_LIMIT=0 "$TOP/build.sh" run > "$TMPD/build.log" 2>&1; then
    cat "$TMPD/build.log" >&2
    die "./build.sh run failed"
fi

# a reload takes effect once the new workers answer
for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/ping" \
         || true)" = 200 ] && break
    sleep 0.2
done


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

# field NAME LINE: NAME=... of a RESULT line
field() {
    local name=$1 line=$2 w

    for w in $line; do
        case $w in "$name="*) echo "${w#*=}"; return 0 ;; esac
    done
    echo "?"
}

# first_id JSON: the value of the first "id" key (a number)
first_id() {
    echo "$1" | grep -o '"id" *: *[0-9]*' | head -1 | grep -o '[0-9]*$' || true
}

# ratio A B: A / B with two decimals, "?" when not numbers or B is 0
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/ || b + 0 == 0) print "?";
        else printf "%.2f\n", a / b }'
}

# a private nginx: start_private <prefix> <port> writes nothing but the
# conf given on stdin (with @PREFIX@), then waits for the port
start_private() {
    local prefix=$1 port=$2 i

    if [ -f "$prefix/logs/nginx.pid" ] \
        && kill -0 "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null
    then
        kill -QUIT "$(cat "$prefix/logs/nginx.pid")" 2>/dev/null || true
        sleep 1
    fi

    rm -rf "$prefix"
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    sed "s|@PREFIX@|$prefix|g" > "$prefix/conf/nginx.conf"

    "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log -t -q \
        || die "nginx -t failed for $prefix/conf/nginx.conf"
    "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log \
        || die "nginx did not start in $prefix (see $prefix/logs/error.log)"
    STARTED+=("$prefix")

    for i in $(seq 1 50); do
        if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
            return 0
        fi
        sleep 0.1
    done
    die "nginx in $prefix does not answer on port $port"
}

# what each side's config shares with the stack's: 2 workers, the same
# connection limits, no access log (the stack logs; a stream is one line
# per connection, written at its end, after the measurements)
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

RESULTS=()      # "<label>|<title>|<RESULT line>|<mem line>"
FAILED=()

# measure LABEL TITLE MASTER-PID CLIENT-ARGS...: one client run with the
# memory samples around it
measure() {
    local label=$1 title=$2 master=$3 memfile out rc=0 result
    local b c d n pss_c pss_d rss_c rss_d
    shift 3

    memfile=$TMPD/mem-$label
    : > "$memfile"

    # the new workers of a reload, not the old ones
    for _ in $(seq 1 50); do
        [ "$(mem_sample "$master" | cut -d' ' -f3)" -ge 1 ] && break
        sleep 0.1
    done
    echo "before $(mem_sample "$master")" >> "$memfile"

    echo "=== $title"
    out=$("$CLIENT" -n "$SSE_N" -m "$SSE_M" -r "$SSE_RATE" \
              -t "$SSE_TIMEOUT" -l "$label" \
              --hook "$SELF mem $master $memfile" "$@" 2>&1) || rc=$?
    echo "$out"

    result=$(echo "$out" | grep '^RESULT ' | tail -1 || true)
    [ -n "$result" ] || result="RESULT label=$label"

    b=$(awk '$1 == "before" { print $2, $3 }' "$memfile")
    c=$(awk '$1 == "connected" { print $2, $3 }' "$memfile")
    d=$(awk '$1 == "delivered" { print $2, $3 }' "$memfile")
    n=$(field ready "$result")

    if [ -n "$b" ] && [ -n "$c" ] && [ -n "$d" ] && [ "$n" != "?" ] \
        && [ "$n" -gt 0 ]
    then
        read -r rss_c pss_c < <(awk -v b="$b" -v c="$c" -v n="$n" 'BEGIN {
            split(b, x, " "); split(c, y, " ");
            printf "%.0f %.0f\n", (y[1] - x[1]) * 1024 / n,
                                  (y[2] - x[2]) * 1024 / n }')
        read -r rss_d pss_d < <(awk -v b="$b" -v d="$d" -v n="$n" 'BEGIN {
            split(b, x, " "); split(d, y, " ");
            printf "%.0f %.0f\n", (y[1] - x[1]) * 1024 / n,
                                  (y[2] - x[2]) * 1024 / n }')
    else
        rss_c='?' pss_c='?' rss_d='?' pss_d='?'
        FAILED+=("$label: no memory samples")
    fi

    mem="MEM label=$label"
    mem+=" workers=$(awk '$1 == "before" { print $4 }' "$memfile")"
    mem+=" before_rss_kb=${b%% *} before_pss_kb=${b##* }"
    mem+=" open_rss_kb=${c%% *} open_pss_kb=${c##* }"
    mem+=" delivered_rss_kb=${d%% *} delivered_pss_kb=${d##* }"
    mem+=" streams=$n open_rss_b=$rss_c open_pss_b=$pss_c"
    mem+=" delivered_rss_b=$rss_d delivered_pss_b=$pss_d"
    echo "memory (workers, kB): before: Rss ${b%% *} Pss ${b##* };" \
         "streams open: Rss ${c%% *} Pss ${c##* };" \
         "after delivery: Rss ${d%% *} Pss ${d##* }"
    echo "memory per stream:    open: Pss $pss_c B (Rss $rss_c B);" \
         "after delivery: Pss $pss_d B (Rss $rss_d B)"
    echo "$mem"
    echo

    if [ $rc -ne 0 ]; then
        FAILED+=("$label: $(field received "$result") of"\
" $(field expected "$result") deliveries,"\
" $(field publish_err "$result") publish errors,"\
" $(field failed "$result") streams failed (client exit $rc)")
    fi

    RESULTS+=("$label|$title|$result|$mem")
}


# ---------------------------------------------------------------- the sides

RUN_ID=$(date -u +%H%M%S)$$
DATA=$(payload)

run_room() {
    local code out status a_email b_email pw ta tb bid room

    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
           "$BASE/api/messages/stream/1" || true)
    if [ "$code" != 401 ]; then
        echo "room: GET /api/messages/stream/1 answers $code, not 401:" \
             "the stack does not route the room stream (the chat module)" \
             "yet; measuring the hub through chat_diagnostics instead"
        echo
        ROOM_FALLBACK=1
        return 0
    fi

    # two users, their room; A sends, N streams of B listen
    pw="Bench#${RANDOM}x"
    a_email="sse.a.$RUN_ID@example.com"
    b_email="sse.b.$RUN_ID@example.com"

    for who in a b; do
        local email=$a_email
        [ $who = b ] && email=$b_email
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
        local tok
        tok=$(echo "${out%$'\n'*}" \
              | sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p')
        [ -n "$tok" ] || die "no access_token in the login answer"
        if [ $who = a ]; then ta=$tok; else tb=$tok; fi
    done

    [ -n "$bid" ] || die "no id in the register answer"

    out=$(curl -s --max-time 30 -w '\n%{http_code}' \
          -H "Authorization: Bearer $ta" \
          "$BASE/api/chat-rooms/check/$bid") || die "room: curl failed"
    status=${out##*$'\n'}
    [ "$status" = 200 ] \
        || die "GET /api/chat-rooms/check/$bid answered $status: ${out%$'\n'*}"
    room=$(first_id "${out%$'\n'*}")
    [ -n "$room" ] || die "no room id in ${out%$'\n'*}"

    echo "room: $room (users sse_a_$RUN_ID sends, $SSE_N streams of" \
         "sse_b_$RUN_ID listen)"

    measure room "nginx-chat: room stream (C10/C4, gateway :$CHAT_HTTP_PORT)" \
        "$(cat "$WORK/nginx/logs/nginx.pid")" \
        -p "$CHAT_HTTP_PORT" \
        -u "/api/messages/stream/$room?access_token=$tb" \
        -P "/api/messages/$room" -X "Authorization: Bearer $ta" \
        -b '{"content":"t=%T seq=%S"}' --ready connected
}

run_diag() {
    local prefix=$WORK/bench-diag so=$WORK/build/ngx_http_chat_core_module.so

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

    measure diag \
        "nginx-chat: core SSE hub (chat_diagnostics, :$SSE_DIAG_PORT)" \
        "$(cat "$prefix/logs/nginx.pid")" \
        -p "$SSE_DIAG_PORT" \
        -u "/diag/stream/sse$RUN_ID" -P "/diag/publish/sse$RUN_ID" \
        -b "{\"event\":\"new_message\",\"id\":\"%S\",\"data\":$DATA}" \
        --ready connected

    "$NGINX" -p "$prefix/" -c conf/nginx.conf -s quit 2>/dev/null || true
}

run_nchan() {
    local prefix=$WORK/bench-nchan store pass=""

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

    measure nchan "nchan $NCHAN_VERSION ($SSE_NCHAN_STORE, :$SSE_NCHAN_PORT)" \
        "$(cat "$prefix/logs/nginx.pid")" \
        -p "$SSE_NCHAN_PORT" \
        -u "/sub/sse$RUN_ID" -P "/pub/sse$RUN_ID" \
        -b "$DATA" --ready ''

    "$NGINX" -p "$prefix/" -c conf/nginx.conf -s quit 2>/dev/null || true
}


# ---------------------------------------------------------------- run

PACE="$SSE_RATE/s"
[ "$SSE_RATE" = 0 ] && PACE="back to back"

echo "=== SSE fan-out: $SSE_N streams on one channel, $SSE_M messages" \
     "($PACE), 1 unmeasured warm-up message"
if [ -z "${BENCH_RESULT_FILE:-}" ]; then
    echo "date:   $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit $(
        git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$TOP" diff --quiet HEAD 2>/dev/null \
            || echo ' (with local changes)')"
fi
echo "nginx:  $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')," \
     "2 workers on each side; nchan $NCHAN_VERSION, storage $SSE_NCHAN_STORE"
echo "client: bench/sse/sse-fanout.c, one epoll thread, on the same" \
     "$(nproc) cores"
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before)"
echo

ROOM_FALLBACK=
ran_diag=
for t in "${TARGETS[@]}"; do
    case $t in
        room)
            run_room
            if [ -n "$ROOM_FALLBACK" ] && [ -z "$ran_diag" ]; then
                run_diag
                ran_diag=1
            fi
            ;;
        diag)
            if [ -z "$ran_diag" ]; then
                run_diag
                ran_diag=1
            fi
            ;;
    esac
done

run_nchan


# ---------------------------------------------------------------- summary

echo "=== summary: $SSE_N streams, $SSE_M messages ($PACE)"
printf '%-6s %6s %15s %9s %9s %9s %9s %10s %9s %12s %12s\n' \
    side ready deliveries p50_ms p90_ms p99_ms max_ms fanout_p99 post_p50 \
    "B/stream" "B/stream"
printf '%-6s %6s %15s %9s %9s %9s %9s %10s %9s %12s %12s\n' \
    "" "" "" "" "" "" "" "" "" "open (Pss)" "after (Pss)"

for r in "${RESULTS[@]}"; do
    IFS='|' read -r label title res mem <<< "$r"
    printf '%-6s %6s %15s %9s %9s %9s %9s %10s %9s %12s %12s\n' \
        "$label" "$(field ready "$res")" \
        "$(field received "$res")/$(field expected "$res")" \
        "$(field p50_ms "$res")" "$(field p90_ms "$res")" \
        "$(field p99_ms "$res")" "$(field max_ms "$res")" \
        "$(field fanout_p99_ms "$res")" "$(field post_p50_ms "$res")" \
        "$(field open_pss_b "$mem")" "$(field delivered_pss_b "$mem")"
done
echo

for r in "${RESULTS[@]}"; do
    IFS='|' read -r label title res mem <<< "$r"
    echo "$label: $title"
done
echo

nres=""
nmem=""
for r in "${RESULTS[@]}"; do
    IFS='|' read -r label title res mem <<< "$r"
    if [ "$label" = nchan ]; then
        nres=$res
        nmem=$mem
    fi
done

for r in "${RESULTS[@]}"; do
    IFS='|' read -r label title res mem <<< "$r"
    [ "$label" = nchan ] && continue

    p50=$(ratio "$(field p50_ms "$res")" "$(field p50_ms "$nres")")
    p99=$(ratio "$(field p99_ms "$res")" "$(field p99_ms "$nres")")
    memd=$(ratio "$(field delivered_pss_b "$mem")" \
                 "$(field delivered_pss_b "$nmem")")
    memo=$(ratio "$(field open_pss_b "$mem")" "$(field open_pss_b "$nmem")")

    echo "$label / nchan:  latency p50 ratio $p50, p99 ratio $p99;" \
         "memory per stream ratio $memd (Pss, after delivery), $memo" \
         "(Pss, streams just open)"
    echo "RATIO label=$label p50=$p50 p99=$p99 mem_per_stream=$memd" \
         "mem_per_stream_open=$memo"
done
echo "(below 1: nginx-chat is faster or smaller than nchan)"
echo
echo "load:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, after)"

if [ ${#FAILED[@]} -gt 0 ]; then
    echo
    echo "FAILED:"
    printf '  %s\n' "${FAILED[@]}"
    exit 1
fi
