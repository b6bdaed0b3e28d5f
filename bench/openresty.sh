#!/usr/bin/env bash
#
# GET /api/profile/me on our gateway against an idiomatic OpenResty
# implementation of the same request, on the same nginx binary and the
# same datastores, measured in the same run with the same wrk settings
# (./build.sh bench openresty starts the stack with the rate limit off
# and runs this).
#
#   1. checks the Lua libraries (BENCH_RESTY_LIB, below); without them it
#      says what it needs and exits 77, "skipped"; installs Debian's
#      libnginx-mod-http-lua, libnginx-mod-http-ndk, lua-resty-core and
#      lua-cjson with apt-get when they are missing
#   2. starts the peer: Debian's /usr/sbin/nginx with the lua module, 2
#      workers, bench/openresty/nginx.conf and bench/openresty/chat_peer.lua,
#      on the MariaDB, Redis and JWT secret of the running stack (read
#      from its nginx.conf), in CHAT_WORK/bench-openresty
#   3. registers a user of its own and logs in; both sides must answer
#      profile/me with equal JSON bodies (and a missing and a bad token
#      with equal 401 bodies), and log the request with the same fields
#   4. BENCH_ROUNDS rounds, in the order ours, peer, peer, ours, ...
#      (a drift of the machine's load falls on both sides alike): each a
#      warm-up, a wait until the stack is quiet, then the wrk run between
#      two readings of the CPU time of each side's nginx workers and
#      master, mariadbd and redis-server (/proc/<pid>/stat, as
#      bench/cpu.sh)
#   5. instructions per request, which the machine's load does not
#      change: each side's configuration in one nginx process under
#      valgrind's callgrind (as bench/profile.sh), BENCH_CALLGRIND_N
#      GET /ping then as many GET /api/profile/me over one keep-alive
#      connection, the counters zeroed between
#   6. both sides' wrk reports, CPU per request side by side, the ratios,
#      the instructions and the functions that take most of them, and
#      the GOAL lines
#
# Environment (defaults in brackets):
#   the settings of bench/lib.sh (URLs, threads, connections, durations,
#   where the stack's processes are)
#   BENCH_RESTY_LIB        the lib/ directory holding resty/redis.lua,
#                          resty/mysql.lua, resty/string.lua,
#                          resty/sha256.lua and resty/openssl.lua with
#                          resty/openssl/ (lua_package_path) [none]
#   BENCH_OPENRESTY_PORT   the peer's port [CHAT_HTTP_PORT + 10412, 18492]
#   BENCH_ROUNDS           measured runs of each side [2]
#   BENCH_CALLGRIND_N      requests of each callgrind phase [2000]; 0: no
#                          callgrind runs (nor when valgrind is missing)
#   BENCH_CALLGRIND_TOP    functions listed for each side [12]
#
# The callgrind runs listen on the ports after BENCH_OPENRESTY_PORT:
# the peer on +1, our configuration's listeners on +2, +3, ...
#
# Exit status: 0; 1 when a run saw an error or the answers differ; 77
# when the Lua libraries are not given (nothing measured).

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SKIPPED=77


# ---------------------------------------------------------------- libraries

: "${BENCH_RESTY_LIB:=}"

missing_libs() {
    local f

    for f in resty/redis.lua resty/mysql.lua resty/string.lua \
             resty/sha256.lua resty/openssl.lua resty/openssl/hmac.lua
    do
        [ -f "$BENCH_RESTY_LIB/$f" ] || echo "$f"
    done
}

if [ -z "$BENCH_RESTY_LIB" ] || [ -n "$(missing_libs)" ]; then
    cat <<EOF
bench/openresty.sh: skipped, the OpenResty peer needs Lua libraries that
Debian does not package.  Put the lib/ directories of these projects
together in one directory and name it in BENCH_RESTY_LIB:

  lua-resty-redis    https://github.com/openresty/lua-resty-redis
  lua-resty-mysql    https://github.com/openresty/lua-resty-mysql
  lua-resty-string   https://github.com/openresty/lua-resty-string
  lua-resty-openssl  https://github.com/fffonion/lua-resty-openssl

e.g. BENCH_RESTY_LIB=/tmp/resty/lib ./build.sh bench openresty, with
/tmp/resty/lib/resty/redis.lua, .../resty/mysql.lua, and so on.
EOF
    if [ -n "$BENCH_RESTY_LIB" ]; then
        echo "missing in $BENCH_RESTY_LIB: $(missing_libs | paste -sd' ')"
    fi
    exit $SKIPPED
fi

BENCH_RESTY_LIB=$(cd "$BENCH_RESTY_LIB" && pwd)


. "$HERE/lib.sh"

: "${BENCH_OPENRESTY_PORT:=$(( ${CHAT_HTTP_PORT:-8080} + 10412 ))}"
: "${BENCH_ROUNDS:=2}"

NGINX=/usr/sbin/nginx
PEER=$WORK/bench-openresty
PEER_URL=http://127.0.0.1:$BENCH_OPENRESTY_PORT

TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"' EXIT


# ---------------------------------------------------------------- packages

PACKAGES="libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core lua-cjson"

need=()
for p in $PACKAGES; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
        || need+=("$p")
done

if [ ${#need[@]} -gt 0 ]; then
    echo ">>> apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi


# ---------------------------------------------------------------- the peer

check_stack

# the stack's datastores and secret, as its nginx.conf has them
STACK_CONF=$WORK/nginx/conf/nginx.conf
[ -f "$STACK_CONF" ] \
    || die "no $STACK_CONF: is the stack running (./build.sh run)?"

# directive NAME: the arguments of a directive of the stack's nginx.conf,
# which may span lines
directive() {
    tr '\n' ' ' < "$STACK_CONF" \
    | grep -o "[[:space:]]$1[[:space:]][^;]*;" | head -1 \
    | sed -e "s/^[[:space:]]*$1[[:space:]]*//" -e 's/;$//' -e 's/  */ /g'
}

# option NAME ARGS: the value of NAME=... among ARGS
option() {
    local w

    for w in $2; do
        case $w in "$1="*) echo "${w#*=}"; return 0 ;; esac
    done
}

MYSQL=$(directive chat_mysql)
MYSQL_ADDR=${MYSQL%% *}
REDIS_ADDR=$(directive chat_redis)
SECRET=$(directive chat_jwt_secret | sed 's/^"\(.*\)"$/\1/')

[ -n "$MYSQL_ADDR" ] && [ -n "$REDIS_ADDR" ] && [ -n "$SECRET" ] \
    || die "chat_mysql, chat_redis or chat_jwt_secret not found in $STACK_CONF"

# a value for the Lua string literals of the template
lua_value() {
    printf '%s' "$1" | sed -e 's/[\\"]/\\&/g' -e 's/[\\|&]/\\&/g'
}

stop_peer() {
    local pid

    pid=$(cat "$PEER/logs/nginx.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -QUIT "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

trap 'stop_peer; rm -rf "$TMPD"' EXIT

stop_peer
mkdir -p "$PEER/conf" "$PEER/logs" "$PEER/tmp"
: > "$PEER/logs/access.log"

sed -e "s|@PREFIX@|$PEER|g" \
    -e "s|@LUA_DIR@|$HERE/openresty|g" \
    -e "s|@RESTY_LIB@|$BENCH_RESTY_LIB|g" \
    -e "s|@PORT@|$BENCH_OPENRESTY_PORT|g" \
    -e "s|@JWT_SECRET@|$(lua_value "$SECRET")|g" \
    -e "s|@REDIS_PORT@|${REDIS_ADDR##*:}|g" \
    -e "s|@MYSQL_HOST@|$(lua_value "${MYSQL_ADDR%:*}")|g" \
    -e "s|@MYSQL_PORT@|${MYSQL_ADDR##*:}|g" \
    -e "s|@MYSQL_USER@|$(lua_value "$(option user "$MYSQL")")|g" \
    -e "s|@MYSQL_PASSWORD@|$(lua_value "$(option password "$MYSQL")")|g" \
    -e "s|@MYSQL_DATABASE@|$(lua_value "$(option database "$MYSQL")")|g" \
    "$HERE/openresty/nginx.conf" > "$PEER/conf/nginx.conf"

"$NGINX" -p "$PEER/" -c conf/nginx.conf -e logs/error.log -t -q \
    || die "nginx -t failed for $PEER/conf/nginx.conf"
"$NGINX" -p "$PEER/" -c conf/nginx.conf -e logs/error.log \
    || die "the peer did not start: see $PEER/logs/error.log"

for _ in $(seq 1 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
          "$PEER_URL/ping" || true)" = 200 ] && break
    sleep 0.1
done


# ---------------------------------------------------------------- answers

new_user

# same_json NAME A B: A and B are equal as JSON
same_json() {
    if python3 -c 'import json, sys
sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' "$2" "$3" \
        2>/dev/null
    then
        echo "same answer:  $1: $2"
    else
        echo "DIFFERENT answers, $1:"
        echo "  ours: $2"
        echo "  peer: $3"
        FAILED+=("$1: the two answers differ")
    fi
}

# get URL [TOKEN]: the body and, on the last line, the status
get() {
    local args=(-s --max-time 10 -w '\n%{http_code}')

    [ -n "${2:-}" ] && args+=(-H "Authorization: Bearer $2")
    curl "${args[@]}" "$1" || true
}

for t in "$USER_TOKEN" "" "$USER_TOKEN.x"; do
    case $t in
        "")    what="no token" ;;
        *.x)   what="a bad token" ;;
        *)     what="profile/me" ;;
    esac
    a=$(get "$BENCH_API_URL/api/profile/me" "$t")
    b=$(get "$PEER_URL/api/profile/me" "$t")
    if [ "${a##*$'\n'}" != "${b##*$'\n'}" ]; then
        FAILED+=("$what: status ${a##*$'\n'} (ours) but ${b##*$'\n'} (peer)")
    fi
    same_json "$what (${a##*$'\n'})" "${a%$'\n'*}" "${b%$'\n'*}"
done

# the access logs: one line per request, the same fields
sleep 0.2
keys() {
    tail -1 "$1" | python3 -c 'import json, sys
print(" ".join(json.loads(sys.stdin.read()).keys()))' 2>/dev/null || true
}
k_ours=$(keys "$WORK/nginx/logs/access.log")
k_peer=$(keys "$PEER/logs/access.log")
if [ -n "$k_ours" ] && [ "$k_ours" = "$k_peer" ]; then
    echo "same log fields: $k_ours"
else
    FAILED+=("the access log lines differ: ours '$k_ours', peer '$k_peer'")
fi
echo

[ ${#FAILED[@]} -eq 0 ] || finish


# ---------------------------------------------------------------- CPU time

NAMES="nginx_workers nginx_master mariadbd redis"
declare -A TITLE=(
    [nginx_workers]="nginx workers"
    [nginx_master]="nginx master"
    [mariadbd]="mariadbd"
    [redis]="redis-server"
    [total]="total"
)

# side_processes PIDFILE: "<name> <pid>" for an nginx master, its workers
# and the stack's MariaDB and Redis
side_processes() {
    nginx_processes "$1"
    echo "mariadbd $(store_pid "$WORK/run/mariadb.pid" "${MYSQL_ADDR##*:}")"
    echo "redis $(store_pid "$WORK/run/redis.pid" "${REDIS_ADDR##*:}")"
}

# client_ticks: the CPU time of this shell's ended children, wrk's runs
# among them (cutime + cstime)
client_ticks() {
    awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"
}

side_snapshot() {
    local name pid

    while read -r name pid; do
        echo "$name $pid $(cpu_ticks "$pid")"
    done < <(side_processes "$1")
}


# ---------------------------------------------------------------- the runs

declare -A PIDFILE=(
    [ours]=$WORK/nginx/logs/nginx.pid
    [peer]=$PEER/logs/nginx.pid
)
declare -A URL=(
    [ours]=$BENCH_API_URL/api/profile/me
    [peer]=$PEER_URL/api/profile/me
)
declare -A SIDE_TITLE=(
    [ours]="nginx-chat (gateway)"
    [peer]="OpenResty peer"
)

echo "=== GET /api/profile/me: nginx-chat against an OpenResty peer"
version() {
    dpkg-query -W -f '${Version}' "$1"
}

echo "ours:      ${URL[ours]} (nginx master $(cat "${PIDFILE[ours]}"))"
echo "peer:      ${URL[peer]} (nginx master $(cat "${PIDFILE[peer]}"))"
echo "           libnginx-mod-http-lua $(version libnginx-mod-http-lua)," \
     "lua-resty-core $(version lua-resty-core)," \
     "lua-cjson $(version lua-cjson)"
echo "           $BENCH_RESTY_LIB"
echo "datastores: MariaDB $MYSQL_ADDR, Redis $REDIS_ADDR (the stack's, shared)"
echo "wrk:       $BENCH_THREADS threads, $BENCH_CONNECTIONS connections" \
     "x $BENCH_DURATION (warm-up $BENCH_WARMUP), timeout $BENCH_TIMEOUT;" \
     "$BENCH_ROUNDS rounds"
echo "           CPU time from /proc/<pid>/stat (utime + stime, all" \
     "threads), $CLK_TCK ticks a second"
echo

# one_run SIDE ROUND: a warm-up, a quiet stack, then the measured run
# between two CPU snapshots; appends "<side> <requests> <seconds>" to
# runs and the per-process ticks to cpu.<side>
one_run() {
    local side=$1 round=$2 label=${1}_r$2 t0 c0 c1 secs

    warmup "$label" "$BENCH_CONNECTIONS" "${URL[$side]}" \
        BENCH_TOKEN="$USER_TOKEN"
    settle
    echo "$label (${SIDE_TITLE[$side]}): warmed up, the stack $(quiet_text)"

    side_snapshot "${PIDFILE[$side]}" > "$TMPD/$label.before"
    c0=$(client_ticks)
    t0=$(now)
    BENCH_WARMUP=0 measure "$label" "$BENCH_CONNECTIONS" "$BENCH_DURATION" \
        "${URL[$side]}" BENCH_TOKEN="$USER_TOKEN"
    c1=$(client_ticks)
    side_snapshot "${PIDFILE[$side]}" > "$TMPD/$label.after"
    secs=$(since "$t0")

    echo "$RESULT" >> "$TMPD/results.$side"
    cpu_delta "$TMPD/$label.before" "$TMPD/$label.after" \
        | sed 's/^nginx_worker /nginx_workers /' >> "$TMPD/cpu.$side"
    echo "wrk $((c1 - c0)) 1" >> "$TMPD/cpu.$side"
    echo "$side $(field requests "$RESULT") $secs" >> "$TMPD/runs"
}

for r in $(seq 1 "$BENCH_ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then order="ours peer"; else order="peer ours"; fi
    for side in $order; do
        one_run "$side" "$r"
    done
done


# ---------------------------------------------------------------- callgrind

: "${BENCH_CALLGRIND_N:=2000}"
: "${BENCH_CALLGRIND_TOP:=12}"

# cg_conf SIDE: a copy of the side's configuration for one process under
# valgrind, in CHAT_WORK/bench-openresty-cg-SIDE, its listeners moved to
# ports of their own; prints the port of the first (the gateway's)
cg_conf() {
    local side=$1 src dir prefix first

    case $side in
        ours) src=$WORK/nginx; first=$((BENCH_OPENRESTY_PORT + 2)) ;;
        peer) src=$PEER; first=$((BENCH_OPENRESTY_PORT + 1)) ;;
    esac
    prefix=$WORK/bench-openresty-cg-$side

    rm -rf "$prefix"
    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    cp "$src"/conf/*.conf "$prefix/conf/"

    perl -pi -e '
        BEGIN { $port = '"$first"' }
        s{\Q'"$src"'/\E}{'"$prefix"'/}g;
        s{^(\s*listen\s+127\.0\.0\.1:)\d+}{$1 . $port++}e;
        s{^worker_processes\s.*}{worker_processes 1;\nmaster_process off;\ndaemon off;};
    ' "$prefix/conf/nginx.conf"

    echo "$first"
}

# cg_side SIDE: BENCH_CALLGRIND_N GET /ping then GET /api/profile/me on
# the side's gateway in one nginx process under callgrind; leaves the
# two dumps in CHAT_WORK/bench-openresty-cg-SIDE/{ping,me}.out
cg_side() {
    local side=$1 prefix=$WORK/bench-openresty-cg-$1 port vg phase url

    port=$(cg_conf "$side")

    # LuaJIT writes the code of its traces: --smc-check has valgrind
    # see it (both sides run with it, for the same instrumentation)
    valgrind --tool=callgrind --smc-check=all-non-file \
        --callgrind-out-file="$prefix/callgrind.%p" --dump-instr=no \
        "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log \
        > "$prefix/valgrind.log" 2>&1 &
    vg=$!

    for _ in $(seq 1 300); do
        curl -s -o /dev/null "http://127.0.0.1:$port/ping" && break
        sleep 0.2
    done

    for phase in ping me; do
        url=http://127.0.0.1:$port/ping
        [ $phase = me ] && url=http://127.0.0.1:$port/api/profile/me
        {
            echo "header = \"Authorization: Bearer $USER_TOKEN\""
            for _ in $(seq 1 "$BENCH_CALLGRIND_N"); do
                echo "url = \"$url\""
                echo 'output = "/dev/null"'
            done
        } > "$prefix/$phase.curl"

        # warm: the pools' connections open, LuaJIT compiles its traces
        curl -s -K "$prefix/$phase.curl" -o /dev/null || true

        callgrind_control -z "$vg" >/dev/null 2>&1
        curl -s -K "$prefix/$phase.curl" -w '%{http_code}\n' \
            | sort | uniq -c | sed "s/^ */  $side $phase: /; s/\$/ answers/"
        callgrind_control -d "$phase" "$vg" >/dev/null 2>&1
    done

    kill "$vg" 2>/dev/null || true
    wait "$vg" 2>/dev/null || true

    # the dumps are numbered in the order of the phases
    mv "$prefix/callgrind.$vg.1" "$prefix/ping.out"
    mv "$prefix/callgrind.$vg.2" "$prefix/me.out"
}

# cg_total FILE: the instructions per request of a dump
cg_total() {
    local t

    t=$(callgrind_annotate "$1" 2>/dev/null \
        | sed -n 's/^ *\([0-9,]*\) *(100.0%) *PROGRAM TOTALS.*/\1/p' \
        | tr -d ,)
    echo $(( ${t:-0} / BENCH_CALLGRIND_N ))
}

declare -A INSTR_PING INSTR_ME

if [ "$BENCH_CALLGRIND_N" != 0 ] && command -v valgrind >/dev/null; then
    echo "=== callgrind: $BENCH_CALLGRIND_N requests a phase, one process" \
         "a side, one keep-alive connection"
    for side in ours peer; do
        cg_side "$side"
        INSTR_PING[$side]=$(cg_total "$WORK/bench-openresty-cg-$side/ping.out")
        INSTR_ME[$side]=$(cg_total "$WORK/bench-openresty-cg-$side/me.out")
    done
    echo

    for side in ours peer; do
        echo "top functions of GET /api/profile/me, ${SIDE_TITLE[$side]}" \
             "(self, all $BENCH_CALLGRIND_N requests; ??? in [???]: code" \
             "LuaJIT compiled):"
        callgrind_annotate --inclusive=no --threshold=100 \
            "$WORK/bench-openresty-cg-$side/me.out" 2>/dev/null \
            | sed -n '/^Ir/,$p' | grep -v '(100.0%)' | grep '%)' \
            | awk -v n="$BENCH_CALLGRIND_TOP" 'NR <= n' || true
        echo
    done
fi


# ---------------------------------------------------------------- summary

# total SIDE FIELD: a RESULT field summed over the side's runs
total() {
    awk -v f="$2" '{ for (i = 1; i <= NF; i++)
                         if (index($i, f "=") == 1)
                             s += substr($i, length(f) + 2) }
                   END { print s + 0 }' "$TMPD/results.$1"
}

# each SIDE FIELD: a RESULT field of each of the side's runs, "a / b"
each() {
    local l out=""

    while read -r l; do
        out="$out${out:+ / }$(field "$2" "$l")"
    done < "$TMPD/results.$1"
    echo "$out"
}

# us SIDE NAME: CPU microseconds per request of the processes NAME
# (total: all of the server's, wrk not among them) over the side's runs
us() {
    local n

    n=$(total "$1" requests)
    awk -v name="$2" -v n="$n" -v hz="$CLK_TCK" '
        (name == "total" && $1 != "wrk") || $1 == name { t += $2 }
        END { if (n > 0) printf "%.1f\n", t / hz * 1e6 / n; else print "?" }' \
        "$TMPD/cpu.$1"
}

# workers SIDE: the nginx workers the side's runs measured
workers() {
    awk '$1 == "nginx_workers" { n = $3 } END { print n + 0 }' "$TMPD/cpu.$1"
}

declare -A REQ DUR RPS

for side in ours peer; do
    REQ[$side]=$(total "$side" requests)
    DUR[$side]=$(total "$side" duration_s)
    RPS[$side]=$(awk -v r="${REQ[$side]}" -v d="${DUR[$side]}" \
                     'BEGIN { printf "%.2f\n", (d > 0 ? r / d : 0) }')
done

echo "=== summary"
printf '%-34s %22s %22s %8s\n' "GET /api/profile/me" "${SIDE_TITLE[ours]}" \
    "${SIDE_TITLE[peer]}" "ours/peer"
srow() {
    printf '%-34s %22s %22s %8s\n' "$1" "$2" "$3" "$(div "$2" "$3")"
}
srow "requests" "${REQ[ours]}" "${REQ[peer]}"
srow "seconds" "${DUR[ours]}" "${DUR[peer]}"
srow "req/s (all rounds)" "${RPS[ours]}" "${RPS[peer]}"
for f in rps:req/s p50_ms:"p50 ms" p99_ms:"p99 ms"; do
    printf '%-34s %22s %22s\n' "${f#*:} by round" "$(each ours "${f%%:*}")" \
        "$(each peer "${f%%:*}")"
done
printf '%-34s %22s %22s\n' errors "$(total ours errors)" \
    "$(total peer errors)"
echo "CPU us per request:"
for p in $NAMES total; do
    t="  ${TITLE[$p]}"
    [ "$p" = nginx_workers ] && t="$t ($(workers ours), $(workers peer))"
    if [ "$p" = nginx_master ]; then
        # idle on both sides: a ratio of zeros says nothing
        printf '%-34s %22s %22s\n' "$t" "$(us ours "$p")" "$(us peer "$p")"
    else
        srow "$t" "$(us ours "$p")" "$(us peer "$p")"
    fi
done
srow "  wrk (the client, same cores)" "$(us ours wrk)" "$(us peer wrk)"

# cores SIDE: the cores the side's processes and wrk kept busy in its
# runs (of the machine's $(nproc)); below that, the side waited or others
# took the rest
cores() {
    awk -v side="$1" -v hz="$CLK_TCK" '
        FILENAME ~ /runs$/ { if ($1 == side) s += $3; next }
        { t += $2 }
        END { if (s > 0) printf "%.2f\n", t / hz / s; else print "?" }' \
        "$TMPD/runs" "$TMPD/cpu.$1"
}
srow "cores busy (servers + wrk, of $(nproc))" "$(cores ours)" "$(cores peer)"
echo

RATIO=$(div "${RPS[ours]}" "${RPS[peer]}")
CPU_RATIO=$(div "$(us ours nginx_workers)" "$(us peer nginx_workers)")

if [ -n "${INSTR_ME[ours]:-}" ]; then
    echo "instructions per request (callgrind, one nginx process):"
    srow "  GET /ping" "${INSTR_PING[ours]}" "${INSTR_PING[peer]}"
    srow "  GET /api/profile/me" "${INSTR_ME[ours]}" "${INSTR_ME[peer]}"
    srow "  profile/me - ping" "$((INSTR_ME[ours] - INSTR_PING[ours]))" \
        "$((INSTR_ME[peer] - INSTR_PING[peer]))"
    echo
fi

echo "ours / peer: req/s $RATIO, nginx workers' CPU per request $CPU_RATIO," \
     "all processes' CPU per request" \
     "$(div "$(us ours total)" "$(us peer total)")"
echo

# goal ID VALUE le|ge TARGET WHAT
goal() {
    local met

    met=$(awk -v v="$2" -v op="$3" -v t="$4" 'BEGIN {
              if (v !~ /^[0-9.]+$/) print "no";
              else if (op == "ge") print (v + 0 >= t + 0 ? "yes" : "no");
              else print (v + 0 <= t + 0 ? "yes" : "no") }')
    echo "GOAL id=$1 value=$2 target=$3:$4 met=$met what=\"$5\""
}

goal read_vs_openresty "$RATIO" ge 2.5 \
    "GET /api/profile/me req/s, ours/OpenResty peer, $BENCH_CONNECTIONS connections, same nginx and datastores"
goal read_cpu_vs_openresty "$CPU_RATIO" le 1 \
    "nginx workers' CPU per profile/me, ours/OpenResty peer (informative)"

finish
