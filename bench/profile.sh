#!/usr/bin/env bash
#
# Where a request's CPU goes in nginx: the stack's configuration (from
# "./build.sh run") in one nginx process under valgrind's callgrind, which
# counts instructions, not seconds: the numbers hold whatever else the
# machine does.  Counters are zeroed before and dumped after each phase:
#
#   ping   BENCH_PROFILE_N x GET /ping on the gateway (nginx's floor)
#   me     BENCH_PROFILE_N x GET /api/profile/me on the user listener
#          (token, its revocation check in Redis, the MariaDB row, JSON,
#          the access log)
#
# and prints instructions per request of each, their difference (the
# handler's share), and the functions that take most of "me",
#
# and one GOAL line (bench/run.sh gathers them): nginx's instructions per
# authenticated read against the budget of 20 us of nginx CPU per read,
# turned into instructions at the rate the cpu benchmark and this script
# measured side by side on 2026-12-06 (27.9 us for 128,315 instructions:
# 4,600 instructions a microsecond), so the goal is judged on a loaded
# machine too.
#
#   BENCH_PROFILE_N       requests per phase [2000]
#   BENCH_PROFILE_TOP     functions listed [25]
#   BENCH_PROFILE_OFFSET  added to the stack's ports for the profiled
#                         nginx's listeners, below the ephemeral ports [5000]
#
# Needs the stack of "./build.sh run" (its datastores and rendered
# nginx.conf) and valgrind.

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${BENCH_PROFILE_N:=2000}"
: "${BENCH_PROFILE_TOP:=25}"

PREFIX=$WORK/bench-profile
OFFSET=${BENCH_PROFILE_OFFSET:-5000}

check_stack
new_user

callgrind_nginx "$PREFIX" "$OFFSET"
vg=$CG_PID
trap 'kill "$vg" 2>/dev/null; wait "$vg" 2>/dev/null' EXIT

gw=$(( ${CHAT_HTTP_PORT:-8080} + OFFSET ))
user=$(( ${CHAT_USER_PORT:-8005} + OFFSET ))

# one keep-alive connection per phase: N URLs in one curl
phase() {
    local name=$1 url=$2 i

    {
        [ -n "${3:-}" ] && echo "header = \"Authorization: Bearer $3\""
        for i in $(seq 1 "$BENCH_PROFILE_N"); do
            echo "url = \"$url\""
            echo 'output = "/dev/null"'
        done
    } > "$PREFIX/$name.curl"

    # warm: the pools' connections open, the caches fill
    curl -s -o /dev/null ${3:+-H "Authorization: Bearer $3"} "$url"

    callgrind_control -z "$vg" >/dev/null 2>&1
    curl -s -K "$PREFIX/$name.curl" -w '%{http_code}\n' \
        | sort | uniq -c | sed "s/^/$name: /" >&2
    callgrind_control -d "$name" "$vg" >/dev/null 2>&1
}

phase ping "http://127.0.0.1:$gw/ping"
phase me "http://127.0.0.1:$user/api/profile/me" "$USER_TOKEN"

kill "$vg" 2>/dev/null
wait "$vg" 2>/dev/null
trap - EXIT

# the dumps are numbered in the order of the phases
ping_file=$PREFIX/callgrind.$vg.1
me_file=$PREFIX/callgrind.$vg.2
[ -f "$ping_file" ] && [ -f "$me_file" ] || die "no callgrind dumps in $PREFIX"

ping=$(( $(callgrind_total "$ping_file") / BENCH_PROFILE_N ))
me=$(( $(callgrind_total "$me_file") / BENCH_PROFILE_N ))

echo "instructions per request (nginx process, callgrind):"
echo "  GET /ping                 $ping"
echo "  GET /api/profile/me       $me"
echo "  the handler's share       $(( me - ping ))"
echo
echo "top functions of GET /api/profile/me (self, all $BENCH_PROFILE_N requests):"
callgrind_top "$me_file" "$BENCH_PROFILE_TOP"

# 20 us x 4,600 instructions a microsecond (see the head)
echo
goal read_nginx_instr "$me" le 92000 \
    "nginx instructions per authenticated read (GET /api/profile/me,\
 callgrind; 20 us at 4,600 instructions/us)"
