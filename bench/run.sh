#!/usr/bin/env bash
#
# Benchmarks of nginx-chat:  ./build.sh bench [name...]
#
# Starts the stack with the gateway's rate limit off (or, when it runs,
# re-renders its configuration and reloads nginx), then runs each named
# benchmark, bench/<name>.sh, every one when no name is given (but those
# of NAMED_ONLY); "core" stands for cpu and overload.  Each benchmark's
# output is printed and saved to bench/results/<name>-<UTC timestamp>.txt;
# one that exits 77 could not run here: it is skipped, not failed.
#
# The benchmarks' own parameters (BENCH_*) are described at the head of
# each script; CHAT_* variables go to build.sh as usual.

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
RESULTS=$HERE/results

: "${CHAT_HTTP_PORT:=8080}"
: "${BENCH_URL:=http://127.0.0.1:$CHAT_HTTP_PORT}"
export CHAT_HTTP_PORT BENCH_URL

log() { printf '>>> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }


# The order of a full run.  chat comes last: the thousands of messages
# it sends are as many notifications for the consumer to create after
# the run, and against the MongoDB test server (a full scan for each)
# that keeps the stack busy for minutes, under whatever would run next.
ORDER="user cpu overload sse chat"

# run only when named: openresty needs Lua libraries that Debian does not
# package (bench/openresty.sh says which)
NAMED_ONLY="openresty"

# a benchmark's exit status when it could not run here; not a failure
SKIPPED=77

# names that stand for several benchmarks
declare -A GROUPS_OF=(
    [core]="cpu overload"       # what the core's CPU work costs
)


# every bench/<name>.sh but this one and the shared lib.sh, in ORDER
# first
available() {
    local f n

    for n in $ORDER; do
        if [ -f "$HERE/$n.sh" ]; then echo "$n"; fi
    done
    for f in "$HERE"/*.sh; do
        n=$(basename "$f" .sh)
        case " run lib $ORDER " in *" $n "*) continue ;; esac
        echo "$n"
    done
}


names=()
for n in "$@"; do
    if [ -n "${GROUPS_OF[$n]:-}" ]; then
        read -ra more <<< "${GROUPS_OF[$n]}"
        names+=("${more[@]}")
    else
        names+=("$n")
    fi
done
if [ ${#names[@]} -eq 0 ]; then
    mapfile -t names < <(available \
                         | grep -vxF -f <(tr ' ' '\n' <<< "$NAMED_ONLY"))
fi
for n in "${names[@]}"; do
    case $n in
        */* | run | lib | "") die "no benchmark '$n' (available: $(available | paste -sd' '), ${!GROUPS_OF[*]})" ;;
    esac
    [ -f "$HERE/$n.sh" ] \
        || die "no benchmark '$n' (available: $(available | paste -sd' '), ${!GROUPS_OF[*]})"
done


if ! command -v wrk >/dev/null; then
    log "apt-get install wrk"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi


# the stack, rate limit off; its messages go to stderr, out of the results
log "starting the stack (CHAT_RATE_LIMIT=0 ./build.sh run)"
CHAT_RATE_LIMIT=0 "$TOP/build.sh" run >&2


# A reload takes effect once the new workers run: wait for /ping, then
# check the limit really is off (more requests than its burst, no 429).
probe() {
    local out req lim

    out=$(BENCH_LABEL=probe wrk -t1 -c4 -d1s --timeout 5s \
              -s "$HERE/stats.lua" "$BENCH_URL/api/bench-rate-limit-probe" \
              2>/dev/null | grep '^RESULT ' || true)
    req=$(echo "$out" | sed -n 's/.* requests=\([0-9]*\) .*/\1/p')
    lim=$(echo "$out" | sed -n 's/.* limited=\([0-9]*\) .*/\1/p')

    # well past the gateway's burst (100), and not one 429
    [ "${req:-0}" -gt 200 ] && [ "$lim" = 0 ]
}

ok=
for _ in $(seq 1 50); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
            "$BENCH_URL/ping" || true)" = 200 ] && probe
    then
        ok=1
        break
    fi
    sleep 0.2
done
[ -n "$ok" ] || die "$BENCH_URL: /ping does not answer 200 or the gateway still rate-limits (429s); see .work/nginx/logs/error.log"


# ---------------------------------------------------------------- machine

machine() {
    local cpu debian

    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    debian=$(cat /etc/debian_version 2>/dev/null || echo "?")
    echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit:   $(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?')$(
        git -C "$TOP" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
    echo "machine:  $(nproc) cores, ${cpu:-?}, Debian $debian, kernel $(uname -r)"
    echo "software: $("${CHAT_NGINX_BINARY:-/usr/sbin/nginx}" -v 2>&1 | sed 's/^nginx version: //'), $(
        wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
    echo "network:  loopback; wrk and the whole stack share these cores"
    echo
}


mkdir -p "$RESULTS"
rc=0
files=()

for n in "${names[@]}"; do
    file=$RESULTS/$n-$(date -u +%Y%m%dT%H%M%SZ).txt
    files+=("$file")
    log "benchmark $n -> ${file#"$TOP"/}"
    brc=0
    {
        machine
        src=0
        BENCH_RESULT_FILE=$file "$HERE/$n.sh" 2>&1 || src=$?
        echo
        echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, after the run)"
        exit $src
    } | tee "$file" || brc=$?
    if [ $brc -eq $SKIPPED ]; then
        log "benchmark $n skipped"
        rm -f "$file"
    elif [ $brc -ne 0 ]; then
        log "benchmark $n FAILED (results kept in ${file#"$TOP"/})"
        rc=1
    fi
    echo
done


# The goals every benchmark of the run printed (GOAL lines, see goal()
# in lib.sh), in one table; saved beside the results.

goals() {
    local f

    # (a benchmark without goals: grep finds nothing, which is no error)
    for f in "${files[@]}"; do
        { grep -h '^GOAL ' "$f" 2>/dev/null || true; } \
            | sed "s|^GOAL |GOAL bench=$(basename "$f" .txt | sed 's/-[0-9TZ]*$//') |"
    done | awk '
        function val(k,   m) {
            if (match($0, " " k "=[^ ]*")) {
                m = substr($0, RSTART + length(k) + 2, RLENGTH - length(k) - 2)
                return m
            }
            return "?"
        }
        BEGIN {
            printf "%-9s %-26s %10s %10s %5s  %s\n", "benchmark", "goal",
                   "measured", "target", "met", "what"
        }
        {
            what = $0
            sub(/.* what="/, "", what)
            sub(/"$/, "", what)
            t = val("target")
            sub(/^le:/, "<= ", t)
            sub(/^ge:/, ">= ", t)
            printf "%-9s %-26s %10s %10s %5s  %s\n", val("bench"), val("id"),
                   val("value"), t, val("met"), what
            n++
            if (val("met") == "yes") met++
        }
        END { printf "%d of %d goals met\n", met, n }'
}

if [ ${#files[@]} -gt 0 ] && grep -qh '^GOAL ' "${files[@]}" 2>/dev/null; then
    file=$RESULTS/goals-$(date -u +%Y%m%dT%H%M%SZ).txt
    {
        echo "=== goals ($(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u '+%Y-%m-%d %H:%M UTC'))"
        goals
    } | tee "$file"
fi

exit $rc
