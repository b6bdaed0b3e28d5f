#!/usr/bin/env bash
#
# What the benchmarks share (sourced by bench/user.sh, bench/chat.sh,
# bench/cpu.sh and bench/overload.sh): settings, one measured wrk run,
# the result fields, a user of their own, the CPU time of the stack's
# processes.
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
#   BENCH_SETTLE           seconds a benchmark waits, in all, for a quiet
#                          stack before it measures [60]
#   CHAT_WORK, CHAT_MYSQL_PORT, CHAT_REDIS_PORT, CHAT_MONGO_PORT
#                          where build.sh runs the stack: the processes
#                          whose CPU time the benchmarks read

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
STATS=$HERE/stats.lua
WORK=${CHAT_WORK:-$TOP/.work}

: "${BENCH_URL:=http://127.0.0.1:${CHAT_HTTP_PORT:-8080}}"
: "${BENCH_API_URL:=$BENCH_URL}"
: "${BENCH_PING_URL:=$BENCH_URL}"
: "${BENCH_THREADS:=2}"
: "${BENCH_CONNECTIONS:=64}"
: "${BENCH_DURATION:=10s}"
: "${BENCH_WARMUP:=2s}"
: "${BENCH_TIMEOUT:=10s}"
: "${BENCH_SETTLE:=60}"

# the datastores' ports, to find their processes (build.sh's defaults)
: "${CHAT_MYSQL_PORT:=13306}"
: "${CHAT_REDIS_PORT:=16379}"
: "${CHAT_MONGO_PORT:=27117}"

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

# goal ID VALUE le|ge LIMIT WHAT: one of the goals the benchmarks are
# held to, as a GOAL line that bench/run.sh gathers into its closing
# table; a value that could not be measured ("?") is a goal not met
goal() {
    local id=$1 value=$2 cmp=$3 limit=$4 what=$5 met

    met=$(awk -v v="$value" -v c="$cmp" -v l="$limit" 'BEGIN {
        if (v !~ /^-?[0-9.]+$/) { print "no"; exit }
        if (c == "le") print (v + 0 <= l + 0) ? "yes" : "no";
        else print (v + 0 >= l + 0) ? "yes" : "no" }')

    echo "GOAL id=$id value=$value target=$cmp:$limit met=$met what=\"$what\""
}

FAILED=()

# warmup LABEL CONNECTIONS URL [VAR=value ...]: the unmeasured wrk run
# of BENCH_WARMUP (none when it is 0)
warmup() {
    local label=$1 conns=$2 url=$3
    shift 3

    [ "$BENCH_WARMUP" != 0 ] || return 0
    env "$@" BENCH_LABEL="$label-warmup" wrk -t"$BENCH_THREADS" \
        -c"$conns" -d"$BENCH_WARMUP" --timeout "$BENCH_TIMEOUT" \
        -s "$STATS" "$url" >/dev/null 2>&1 || true
}


# measure LABEL CONNECTIONS DURATION URL [VAR=value ...]: one wrk run
# (after an unmeasured warm-up); wrk's own report is printed, the RESULT
# line is left in the global RESULT
measure() {
    local label=$1 conns=$2 dur=$3 url=$4 out rc=0
    shift 4

    warmup "$label" "$conns" "$url" "$@"

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


# ---------------------------------------------------------------- CPU time
#
# CPU time is read from /proc/<pid>/stat (utime + stime): for a process
# with threads (MariaDB, the MongoDB server, an nginx worker with its
# thread pools) it is the sum over all its threads, ended ones included.

CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: the process's user + system time in clock ticks, empty
# when it is gone
cpu_ticks() {
    # the command name (field 2) may hold spaces and parentheses: count
    # the fields from after its last ")"
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" \
        2>/dev/null || true
}


# store_pid PIDFILE PORT: the datastore's pid, from the pid file
# ./build.sh writes or, when that is missing or stale, from the process
# listening on PORT
store_pid() {
    local file=$1 port=$2 pid=

    [ -f "$file" ] && pid=$(cat "$file")
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        pid=$(ss -Hltnp "sport = :$port" 2>/dev/null \
              | sed -n 's/.*pid=\([0-9]*\),.*/\1/p' | head -1)
    fi
    echo "$pid"
}


# nginx_processes PIDFILE: "<name> <pid>" for the nginx master of the
# pid file and each of its workers (not old ones still shutting down
# after a reload)
nginx_processes() {
    local master pid args

    master=$(cat "$1" 2>/dev/null || true)
    [ -n "$master" ] && kill -0 "$master" 2>/dev/null \
        || die "no nginx master in $1"
    echo "nginx_master $master"
    while read -r pid args; do
        [ "$args" = "nginx: worker process" ] && echo "nginx_worker $pid"
    done < <(ps -o pid=,args= --ppid "$master")
}


# stack_processes: "<name> <pid>" for every process of the stack in
# CHAT_WORK: nginx's master and workers, MariaDB, Redis, the MongoDB
# server
stack_processes() {
    nginx_processes "$WORK/nginx/logs/nginx.pid"
    echo "mariadbd $(store_pid "$WORK/run/mariadb.pid" "$CHAT_MYSQL_PORT")"
    echo "redis $(store_pid "$WORK/run/redis.pid" "$CHAT_REDIS_PORT")"
    echo "mongo $(store_pid "$WORK/run/mongo.pid" "$CHAT_MONGO_PORT")"
}


# cpu_snapshot: "<name> <pid> <ticks>" for every process of the stack
cpu_snapshot() {
    local name pid

    while read -r name pid; do
        echo "$name $pid $(cpu_ticks "$pid")"
    done < <(stack_processes)
}


# cpu_delta BEFORE AFTER: "<name> <ticks> <processes>" per name (the
# workers summed) between two snapshots; a process must be in both
# (a worker that died or was started in between is left out, and said)
cpu_delta() {
    awk 'NR == FNR { t[$2] = $3; next }
         ($2 in t) && $3 != "" {
             d[$1] += $3 - t[$2]; n[$1]++; if (!($1 in o)) o[$1] = ++k }
         !($2 in t) { printf "note: %s %s started during the run\n",
                             $1, $2 > "/dev/stderr" }
         END { for (x in o) order[o[x]] = x
               for (i = 1; i <= k; i++)
                   print order[i], d[order[i]], n[order[i]] }' "$1" "$2"
}


# stack_ticks [NAME]: the CPU time of the processes called NAME (every
# process of the stack when none is given) now, summed
stack_ticks() {
    cpu_snapshot | awk -v n="${1:-}" 'n == "" || $1 == n { s += $3 }
                                      END { print s + 0 }'
}


# now: seconds since the epoch, with nanoseconds
now() {
    date +%s.%N
}


# since T: seconds from T to now, one decimal
since() {
    awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f\n", b - a }'
}


# quiet_wait MAX: waits until the stack is quiet, its processes together
# below a tenth of a core over a second (an earlier run may have left
# work queued: notifications of sent messages, hashes for clients that
# gave up), at most MAX seconds; sets SETTLED to the seconds waited, with
# a "+" when it gave up
quiet_wait() {
    local max=$1 start a b

    start=$(now)
    a=$(stack_ticks)
    while :; do
        sleep 1
        b=$(stack_ticks)
        SETTLED=$(since "$start")
        [ $((b - a)) -lt $((CLK_TCK / 10)) ] && return 0
        if awk -v s="$SETTLED" -v m="$max" 'BEGIN { exit !(s >= m) }'; then
            SETTLED="$SETTLED+"
            return 0
        fi
        a=$b
    done
}


# quiet_text: how the last wait ended, for the output
quiet_text() {
    case $SETTLED in
        *+) echo "still busy after ${SETTLED%+} s" ;;
        *)  echo "quiet after $SETTLED s" ;;
    esac
}


# settle: quiet_wait before a measurement.  The waits of one benchmark
# take BENCH_SETTLE seconds in all at most: a stack that stays busy (an
# earlier benchmark's backlog) is measured busy, and the output says so,
# rather than waited for again and again.
SETTLE_LEFT=$BENCH_SETTLE

settle() {
    quiet_wait "$SETTLE_LEFT"
    SETTLE_LEFT=$(awk -v l="$SETTLE_LEFT" -v s="${SETTLED%+}" \
                      'BEGIN { printf "%.1f\n", (l > s ? l - s : 0) }')
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


# new_room: two new users and their room; sets SENDER (the first one's
# token) and ROOM
new_room() {
    local other

    new_user
    SENDER=$USER_TOKEN
    new_user
    other=$USER_ID

    ROOM=$(api GET "/api/chat-rooms/check/$other" "$SENDER" \
           | sed -n 's/^{"id":\([0-9]*\),.*/\1/p')
    [ -n "$ROOM" ] || die "no room"
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


# callgrind_nginx PREFIX OFFSET: the stack's configuration (from
# "./build.sh run") in one nginx process under callgrind, its listeners
# moved by OFFSET, its files under PREFIX; sets CG_PID and waits until
# its gateway answers.  Counters run from the start: zero them
# (callgrind_control -z) before what is measured.
callgrind_nginx() {
    local prefix=$1 offset=$2 conf=$WORK/nginx/conf/nginx.conf

    command -v valgrind >/dev/null || die "valgrind is not installed"
    [ -f "$conf" ] || die "$conf is missing (./build.sh run)"

    rm -rf "$prefix"
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    cp "$WORK"/nginx/conf/*.conf "$prefix/conf/"

    perl -pi -e '
        s{\Q'"$WORK"'/nginx/}{'"$prefix"'/}g;
        s{^(\s*listen\s+127\.0\.0\.1:)(\d+)}{$1 . ($2 + '"$offset"')}e;
        s{^worker_processes\s.*}{worker_processes 1;\nmaster_process off;\ndaemon off;};
    ' "$prefix/conf/nginx.conf"

    valgrind --tool=callgrind --callgrind-out-file="$prefix/callgrind.%p" \
        --dump-instr=no --collect-atstart=yes \
        /usr/sbin/nginx -p "$prefix/" -c conf/nginx.conf -e logs/error.log \
        >"$prefix/valgrind.log" 2>&1 &
    CG_PID=$!

    # another nginx on these ports would be measured instead: ours must
    # be up, and its listeners its own
    for _ in $(seq 1 300); do
        kill -0 "$CG_PID" 2>/dev/null \
            || die "the nginx under callgrind exited (see $prefix/valgrind.log)"
        grep -q emerg "$prefix/logs/error.log" 2>/dev/null \
            && die "the nginx under callgrind failed: $(
                   grep emerg "$prefix/logs/error.log" | head -1)"
        # (its pid file follows the listeners: the port is its own)
        [ -f "$prefix/logs/nginx.pid" ] && curl -s -o /dev/null \
            "http://127.0.0.1:$(( ${CHAT_HTTP_PORT:-8080} + offset ))/ping" \
            && return 0
        sleep 0.2
    done

    die "the nginx under callgrind does not answer (see $prefix/logs)"
}


# callgrind_total FILE: the instructions of a callgrind dump
callgrind_total() {
    callgrind_annotate "$1" 2>/dev/null \
        | sed -n 's/^ *\([0-9,]*\) *(100.0%) *PROGRAM TOTALS.*/\1/p' \
        | tr -d ,
}


# callgrind_top FILE N [yes|no]: the N functions with most instructions,
# self (no) or inclusive (yes)
callgrind_top() {
    # (nginx has no symbols: what callgrind cannot place is counted at
    # 100 %)
    callgrind_annotate --inclusive="${3:-no}" --threshold=100 "$1" \
        2>/dev/null \
        | sed -n '/^Ir/,$p' | grep -v '(100.0%)' | grep '%)' \
        | grep -Ev '(below main)|:main |__libc_start_main|start_thread|clone\.S|ld-linux' \
        | head -n "$2"
}
