#!/usr/bin/env bash
#
# nginx-chat: build the modules against Debian's nginx and run the stack.
#
#   ./build.sh deps     install every package the build, the stack and the
#                       suite need (build itself installs only compilers,
#                       headers and libraries; run adds the servers)
#   ./build.sh build    configure once against /usr/share/nginx/src, make modules
#   ./build.sh run      build, start MariaDB + Redis + MongoDB + nginx, print URL
#   ./build.sh test     same set-up, then the whole suite (prove -r t/)
#   ./build.sh test-env the TEST_NGINX_* variables test gives the suite,
#                       as export lines (running a file by hand, t/README)
#   ./build.sh migrate [--dry-run]
#                       bring the database (CHAT_MYSQL_*, CHAT_MONGO_*) up
#                       to conf/schema.sql, from empty or from the original's
#   ./build.sh bench    benchmarks in bench/ against a running stack
#   ./build.sh stop     stop exactly the processes run/test started
#   ./build.sh datastores  start MariaDB, Redis, MongoDB where not running
#                       (as run and test do; tests restart servers with it)
#   ./build.sh deb      build the Debian packages (libnginx-mod-http-chat-*)
#                       into .work/deb/ with dpkg-buildpackage and dh_nginx
#   ./build.sh fuzz [seconds]
#                       libFuzzer targets of the parsers (fuzz/), each run
#                       for that long (60) from its corpus (.work/fuzz/)
#
# Options (environment):
#   CHAT_HTTP_PORT (8080)   gateway listener; service listeners are
#   CHAT_USER_PORT (8005) CHAT_FRIEND_PORT (8003) CHAT_MSG_PORT (8002)
#   CHAT_NOTIFY_PORT (8004)
#   CHAT_MYSQL_PORT (13306) CHAT_REDIS_PORT (16379) CHAT_MONGO_PORT (27117)
#   CHAT_TEST_*_PORT        `test`'s own stack (default: the ports above
#                           + 10000; its block tests' nginx: gateway + 1)
#   CHAT_MYSQL_HOST CHAT_MYSQL_USER (chat) CHAT_MYSQL_PASSWORD (chatpw)
#   CHAT_MYSQL_DATABASE (chat) CHAT_MONGO_URI CHAT_MONGO_DATABASE (chat)
#                           the datastores of run and migrate; with
#                           CHAT_MYSQL_HOST or CHAT_MONGO_URI set, run starts
#                           no server of its own for that one
#   CHAT_RATE_LIMIT         requests per minute per client address on the
#                           gateway (100); 0 disables the limit
#   CHAT_WORK               work directory (.work inside the repository)
#   CHAT_VALGRIND=1         `test` runs nginx under valgrind memcheck
#   CHAT_SANITIZE=1         build the modules with AddressSanitizer and
#                           UndefinedBehaviorSanitizer (in .work/build-sanitize)
#                           and run the stock nginx with their runtimes
#                           preloaded; `test` fails on any report

set -euo pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=${CHAT_WORK:-$TOP/.work}
BUILD=$WORK/build
RUN=$WORK/run
NGX_SRC=/usr/share/nginx/src
NGINX=${CHAT_NGINX_BINARY:-/usr/sbin/nginx}

# the compiler's flags of the modules: Debian's hardening, or the sanitizers
CC_OPT="-g -O2 -fPIC -fstack-protector-strong"
LD_OPT="-Wl,-z,relro -Wl,-z,now -fPIC"

if [ "${CHAT_SANITIZE:-0}" = 1 ]; then
    BUILD=$WORK/build-sanitize
    CC_OPT="-g -O1 -fPIC -fno-omit-frame-pointer -fsanitize=address,undefined"
    LD_OPT="-fPIC -fsanitize=address,undefined"
    SANITIZE_LOGS=$WORK/sanitize
    NGINX=$SANITIZE_LOGS/nginx
fi

: "${CHAT_HTTP_PORT:=8080}"
: "${CHAT_USER_PORT:=8005}"
: "${CHAT_FRIEND_PORT:=8003}"
: "${CHAT_MSG_PORT:=8002}"
: "${CHAT_NOTIFY_PORT:=8004}"
: "${CHAT_MYSQL_PORT:=13306}"
: "${CHAT_REDIS_PORT:=16379}"
: "${CHAT_MONGO_PORT:=27117}"
: "${CHAT_RATE_LIMIT:=100}"
: "${CHAT_JWT_SECRET:=change-me-nginx-chat-secret}"

MODULES="core user friend msg notify"

# what compiling needs (build); what the stack runs on (run); what the
# suite uses besides (test)
BUILD_PACKAGES="nginx nginx-dev libhiredis-dev libmariadb-dev libmongoc-dev
    libbson-dev libcjson-dev libjwt-dev libssl-dev libcrypt-dev
    build-essential pkg-config"
# python3-cryptography: pymysql needs it for MySQL 8's default
# authentication (caching_sha2_password) over a connection without TLS
MIGRATE_PACKAGES="python3 python3-pymysql python3-pymongo
    python3-cryptography"
STACK_PACKAGES="mariadb-server mariadb-client redis-server redis-tools
    procps curl $MIGRATE_PACKAGES"
TEST_PACKAGES="libtest-base-perl libwww-perl libtext-diff-perl
    libtest-longstring-perl libipc-run-perl liblist-moreutils-perl
    liburi-perl valgrind libnginx-mod-nchan libnginx-mod-http-lua
    python3-pymongo chromium"
# what building the Debian packages needs besides (deb); the suite builds,
# checks (lintian) and installs them
DEB_PACKAGES="debhelper dpkg-dev lintian"

# the MongoDB-wire-compatible in-memory server used where no mongod exists
CONGO_PKG="@push.rocks/smartmongo@2.2.0"
CONGO_DEPS="bson@^6.10.0 mingo@^7.2.0 @push.rocks/smartfs@^1.3.1
    @push.rocks/smartpath@^5.0.11 @push.rocks/smartpromise@^4.0.3
    @push.rocks/smartrx@^3.0.0"

# the API reference (Swagger UI) the stack serves, and what the suite checks
# the document and drives the browser client with
DOCS_PKGS="swagger-ui-dist@5.35.0 ajv@8.20.0
    @seriousme/openapi-schema-validator@2.11.0 puppeteer-core@24.43.1"


log() { printf '>>> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }


# ---------------------------------------------------------------- deps

# deps [build|run|test]: the packages of that step and of those before it;
# deps migrate: only what conf/migrate.py runs on
deps() {
    local missing=() p packages=$BUILD_PACKAGES step=${1:-test}

    case $step in
        migrate) packages=$MIGRATE_PACKAGES ;;
        run)  packages="$packages $STACK_PACKAGES" ;;
        test) packages="$packages $STACK_PACKAGES $TEST_PACKAGES $DEB_PACKAGES"
              ;;
        deb)  packages="$packages $DEB_PACKAGES" ;;
        fuzz) packages="$packages $FUZZ_PACKAGES" ;;
    esac

    for p in $packages; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q 'install ok installed' || missing+=("$p")
    done

    # the MongoDB-compatible server and the documentation tools run on node
    case $step in
        run|test)
            if ! command -v node >/dev/null || ! command -v npm >/dev/null
            then
                missing+=(nodejs npm)
            fi
            ;;
    esac

    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            >/dev/null
    fi

    case $step in
        run|test)
            command -v mongod >/dev/null || congo_install
            docs_install
            ;;
    esac
}


congo_install() {
    local dir=$WORK/congo

    [ -f "$dir/lib/congodb/index.js" ] && return 0

    log "installing the MongoDB-compatible test server ($CONGO_PKG)"
    rm -rf "$dir" && mkdir -p "$dir"
    (
        cd "$dir"
        echo '{"name":"chat-congo","private":true,"type":"module"}' \
            > package.json
        # shellcheck disable=SC2086
        npm install --ignore-scripts --no-audit --no-fund --loglevel=error \
            $CONGO_DEPS >/dev/null
        npm pack --loglevel=error "$CONGO_PKG" >/dev/null
        tar xzf push.rocks-smartmongo-*.tgz
        mkdir -p lib
        cp -a package/dist_ts/congodb lib/
        rm -rf package push.rocks-smartmongo-*.tgz
    )
}


# $WORK/docs, what the listeners serve besides the API: openapi.json (the
# gateway's) and services/<name>.json made from openapi/openapi.json,
# Swagger UI under swagger/ (the dist's files and our page), the browser
# client under app/.  Remade on every run: the sources may have changed.
docs_install() {
    local tools=$WORK/docs-tools docs=$WORK/docs f
    local dist=$WORK/docs-tools/node_modules/swagger-ui-dist

    if [ "$(cat "$tools/.pkgs" 2>/dev/null)" != "$DOCS_PKGS" ]; then
        log "installing the documentation tools ($DOCS_PKGS)"
        rm -rf "$tools" && mkdir -p "$tools"
        (
            cd "$tools"
            echo '{"name":"chat-docs-tools","private":true}' > package.json
            # shellcheck disable=SC2086
            npm install --ignore-scripts --no-audit --no-fund \
                --loglevel=error $DOCS_PKGS >/dev/null
        )
        echo "$DOCS_PKGS" > "$tools/.pkgs"
    fi

    rm -rf "$docs.new"
    mkdir -p "$docs.new/swagger"
    node "$TOP/openapi/build.mjs" "$docs.new"
    for f in swagger-ui.css swagger-ui-bundle.js favicon-32x32.png; do
        cp "$dist/$f" "$docs.new/swagger/"
    done
    cp "$TOP"/openapi/swagger/* "$docs.new/swagger/"
    cp -r "$TOP/web" "$docs.new/app"
    chmod -R a+rX "$docs.new"
    rm -rf "$docs" && mv "$docs.new" "$docs"
}


# ---------------------------------------------------------------- build

build() {
    local stamp=$BUILD/.configured sum

    # one build at a time: a second run or test waits for the first
    mkdir -p "$BUILD"
    exec 9>"$BUILD/.lock"
    flock 9

    sum=$(cat "$TOP/config" "$TOP/VERSION" | md5sum | cut -d' ' -f1)

    if [ ! -f "$BUILD/Makefile" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]
    then
        log "configuring against $NGX_SRC"
        mkdir -p "$BUILD"
        (
            cd "$NGX_SRC"
            # shellcheck disable=SC1091
            . ./conf_flags
            ./configure \
                --with-cc-opt="$CC_OPT" \
                --with-ld-opt="$LD_OPT" \
                "${NGX_CONF_FLAGS[@]}" \
                --add-dynamic-module="$TOP" \
                --builddir="$BUILD" >"$BUILD/configure.log" 2>&1
        ) || { tail -20 "$BUILD/configure.log"; die "configure failed"; }
        echo "$sum" > "$stamp"
    fi

    log "make modules"
    make -s -f "$BUILD/Makefile" -C "$NGX_SRC" modules
    write_load_snippets

    if [ "${CHAT_SANITIZE:-0}" = 1 ]; then
        sanitize_wrapper
    fi

    exec 9>&-
}


# The sanitized modules need the sanitizers' runtimes loaded before
# anything else, and nginx stays Debian's own binary: a wrapper preloads
# them.  Workers are forked, not executed, and keep them.  Reports go to
# files (one per process) that `test` looks at; leaks are valgrind's
# business (nginx frees little at exit by design).
sanitize_wrapper() {
    local asan ubsan

    asan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
    ubsan=$(readlink -f "$(gcc -print-file-name=libubsan.so)")
    mkdir -p "$SANITIZE_LOGS"

    {
        echo '#!/bin/sh'
        echo '# nginx with the sanitizers: written by build.sh (CHAT_SANITIZE=1)'
        echo "export LD_PRELOAD=\"$asan $ubsan\""
        echo "export ASAN_OPTIONS=detect_leaks=0:log_path=$SANITIZE_LOGS/asan"
        echo "export UBSAN_OPTIONS=print_stacktrace=1:log_path=$SANITIZE_LOGS/ubsan"
        echo 'exec /usr/sbin/nginx "$@"'
    } > "$NGINX"
    chmod +x "$NGINX"
}


# the sanitizers' reports of a run, if any: the run fails
sanitize_reports() {
    local f rc=0

    for f in "$SANITIZE_LOGS"/asan.* "$SANITIZE_LOGS"/ubsan.*; do
        [ -f "$f" ] || continue
        log "sanitizer report: $f"
        head -40 "$f" >&2
        rc=1
    done

    return $rc
}


# mod-http-chat-*.conf: load snippets as Debian's packages install them
# (paths relative to nginx's prefix, where /usr/share/nginx/modules is
# /usr/lib/nginx/modules), named with their priority in modules-enabled:
# the core first
write_load_snippets() {
    local m prio

    rm -rf "$BUILD/modules-available"
    mkdir -p "$BUILD/modules-available"
    for m in $MODULES; do
        prio=50
        [ "$m" = core ] && prio=10
        echo "load_module modules/ngx_http_chat_${m}_module.so;" \
            > "$BUILD/modules-available/$prio-mod-http-chat-$m.conf"
    done
}


load_modules_list() {
    local m out=""

    for m in $MODULES; do
        out="$out $BUILD/ngx_http_chat_${m}_module.so"
    done
    echo "${out# }"
}


# the packages, from a copy of the source tree (dpkg-buildpackage writes
# its build products into debian/ and its .debs next to the tree)
deb() {
    local version out=$WORK/deb src

    version=$(cat "$TOP/VERSION")
    [ "$(cd "$TOP" && dpkg-parsechangelog -S Version)" = "$version" ] \
        || die "debian/changelog's version is not VERSION ($version)"

    src=$out/nginx-chat-$version
    rm -rf "$out"
    mkdir -p "$src"
    tar -C "$TOP" --exclude=./.work --exclude=./.git \
        --exclude='./t/servroot*' --exclude=./bench/results -cf - . \
        | tar -C "$src" -xf -

    log "dpkg-buildpackage in $src"
    (cd "$src" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1 \
        || { tail -30 "$out/build.log"; die "dpkg-buildpackage failed"; }
    ls "$out"/*.deb
}


# ---------------------------------------------------------------- fuzz

FUZZ_TARGETS="json multipart route jwt"
FUZZ_PACKAGES="clang libclang-rt-14-dev"

# what a target compiles besides itself, of ours
fuzz_sources() {
    local core=$TOP/ngx_chat_core_module

    case $1 in
        json) echo "$core/ngx_http_chat_json.c $core/ngx_http_chat_log.c" ;;
        jwt)  echo "$core/ngx_http_chat_auth.c $core/ngx_http_chat_json.c
                    $core/ngx_http_chat_core_module.c" ;;
    esac
}


# nginx's own source at nginx-dev's version, for the core functions the
# targets link (nginx-dev has the headers only): Debian's source package,
# with lists of our own so the machine's apt configuration stays as it is
nginx_source() {
    local apt=$WORK/fuzz/apt version tarball

    version=$(dpkg-query -W -f='${Version}' nginx-dev)
    version=${version%%-*}

    if [ -f "$WORK/fuzz/nginx-$version/src/core/ngx_string.c" ]; then
        echo "$WORK/fuzz/nginx-$version"
        return 0
    fi

    mkdir -p "$apt/lists/partial" "$apt/cache"
    cat > "$apt/sources.list" <<EOF
deb-src http://deb.debian.org/debian bookworm main
EOF
    set -- -q -o Dir::Etc::SourceList="$apt/sources.list" \
        -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists="$apt/lists" \
        -o Dir::Cache="$apt/cache"

    log "fetching nginx $version's source (Debian's source package)"
    apt-get "$@" update >/dev/null
    (cd "$apt" && apt-get "$@" source --download-only nginx >/dev/null 2>&1) \
        || true

    tarball=$apt/nginx_$version.orig.tar.gz
    [ -f "$tarball" ] || die "no $tarball"

    tar -C "$WORK/fuzz" -xzf "$tarball"
    echo "$WORK/fuzz/nginx-$version"
}


fuzz_build() {
    local src t out flags incs libs core

    src=$(nginx_source)
    out=$WORK/fuzz

    # the route patterns of every module's table
    grep -ho 'NGX_HTTP_[A-Z]*, ngx_string("/api[^"]*")' \
        "$TOP"/ngx_chat_*_module/*.c \
        | sed 's/\(.*\)/    { \1, 0, NULL },/' > "$out/routes.h"

    flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined"
    incs="-I $NGX_SRC/src/core -I $NGX_SRC/src/event
        -I $NGX_SRC/src/event/modules -I $NGX_SRC/src/os/unix
        -I $NGX_SRC/src/http -I $NGX_SRC/src/http/modules
        -I $NGX_SRC/src/http/v2 -I $BUILD -I $TOP/fuzz -I $out
        -I $TOP/ngx_chat_core_module -I $TOP/ngx_chat_user_module
        $(pkg-config --cflags hiredis libmariadb libmongoc-1.0 libbson-1.0 \
                               libcjson libjwt)"
    libs="$(pkg-config --libs libmariadb libmongoc-1.0 libbson-1.0 libcjson \
                             libjwt openssl) -lcrypt"
    core="$src/src/core/ngx_string.c $src/src/core/ngx_palloc.c
        $src/src/core/ngx_array.c $src/src/core/ngx_list.c
        $src/src/core/ngx_times.c $src/src/os/unix/ngx_time.c
        $src/src/os/unix/ngx_alloc.c"

    for t in $FUZZ_TARGETS; do
        log "fuzz target $t"

        # what the parser's files call elsewhere (datastores, nginx's HTTP
        # core) is never reached from the parser: a stub that traps stands
        # in for each, so that reaching one would be a finding
        echo > "$out/stubs-$t.c"

        # shellcheck disable=SC2086
        if ! clang $flags -w $incs -o "$out/$t" "$TOP/fuzz/$t.c" \
                 $(fuzz_sources "$t") $core "$out/stubs-$t.c" $libs \
                 2>"$out/link-$t.log"
        then
            sed -n "s/.*undefined reference to \`\([A-Za-z0-9_]*\)'.*/\1/p" \
                "$out/link-$t.log" | sort -u \
                | sed 's/.*/void &(void) { __builtin_trap(); }/' \
                > "$out/stubs-$t.c"

            # shellcheck disable=SC2086
            clang $flags -w $incs -o "$out/$t" "$TOP/fuzz/$t.c" \
                $(fuzz_sources "$t") $core "$out/stubs-$t.c" $libs \
                || die "fuzz target $t does not build"
        fi
    done
}


# each target for $1 seconds, from the seeds in fuzz/corpus/ and what
# earlier runs found (.work/fuzz/corpus-*); a crash stops the run (what
# crashed stays in .work/fuzz/crashes-<target>/ until removed)
fuzz() {
    local secs=${1:-60} t

    build
    fuzz_build

    for t in $FUZZ_TARGETS; do
        mkdir -p "$WORK/fuzz/corpus-$t" "$WORK/fuzz/crashes-$t"
        log "fuzzing $t for ${secs}s"
        (cd "$WORK/fuzz/crashes-$t" && "$WORK/fuzz/$t" \
            -max_total_time="$secs" -print_final_stats=1 \
            "$WORK/fuzz/corpus-$t" "$TOP/fuzz/corpus/$t") \
            2>&1 | grep -E '^(stat::|#[0-9]+ *DONE|==.*ERROR|SUMMARY)' \
            || true
        if ls "$WORK/fuzz/crashes-$t"/crash-* >/dev/null 2>&1; then
            die "$t found a crash: $WORK/fuzz/crashes-$t/"
        fi
    done
}


# ---------------------------------------------------------------- datastores

pid_alive() {
    local f=$1

    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}


port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}


wait_port() {
    local port=$1 what=$2 i

    for i in $(seq 1 150); do
        port_open "$port" && return 0
        sleep 0.1
    done
    die "$what did not start listening on port $port"
}


start_mariadb() {
    local dir=$WORK/mariadb

    pid_alive "$RUN/mariadb.pid" && return 0
    mkdir -p "$dir" "$RUN"

    if [ ! -d "$dir/data/mysql" ]; then
        log "initialising MariaDB in $dir"
        mariadb-install-db --no-defaults --datadir="$dir/data" --user=root \
            --auth-root-authentication-method=normal --skip-test-db \
            >"$dir/install.log" 2>&1 || die "mariadb-install-db failed"
    fi

    log "starting MariaDB on 127.0.0.1:$CHAT_MYSQL_PORT"
    mariadbd --no-defaults --datadir="$dir/data" --socket="$dir/mysqld.sock" \
        --port="$CHAT_MYSQL_PORT" --bind-address=127.0.0.1 \
        --pid-file="$RUN/mariadb.pid" --user=root --log-error="$dir/error.log" \
        --innodb-buffer-pool-size=128M --skip-log-bin --max-connections=500 \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
        >/dev/null 2>&1 &
    echo $! > "$RUN/mariadb.pid"
    wait_port "$CHAT_MYSQL_PORT" MariaDB
}


mysql_root() {
    mariadb --no-defaults -uroot -h127.0.0.1 -P"$CHAT_MYSQL_PORT" --protocol=tcp \
        "$@"
}


# the private MariaDB's database and user for CHAT_MYSQL_DATABASE, then
# its schema by migrate (a new database is migrated from empty)
prepare_database() {
    local db=$CHAT_MYSQL_DATABASE user=$CHAT_MYSQL_USER i

    for i in $(seq 1 50); do
        mysql_root -e 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.1
    done

    mysql_root <<EOF
CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$user'@'%' IDENTIFIED BY '$CHAT_MYSQL_PASSWORD';
GRANT ALL ON \`$db\`.* TO '$user'@'%';
EOF
    migrate
}


# the datastores of run and migrate: the private servers unless told
datastore_env() {
    local uri="mongodb://127.0.0.1:$CHAT_MONGO_PORT/"

    uri="$uri?serverSelectionTimeoutMS=3000&connectTimeoutMS=2000"
    uri="$uri&socketTimeoutMS=5000"

    export CHAT_MYSQL_HOST=${CHAT_MYSQL_HOST:-127.0.0.1}
    export CHAT_MYSQL_PORT CHAT_MONGO_PORT
    export CHAT_MYSQL_USER=${CHAT_MYSQL_USER:-chat}
    export CHAT_MYSQL_PASSWORD=${CHAT_MYSQL_PASSWORD-chatpw}
    export CHAT_MYSQL_DATABASE=${CHAT_MYSQL_DATABASE:-chat}
    export CHAT_MONGO_URI=${CHAT_MONGO_URI:-$uri}
    export CHAT_MONGO_DATABASE=${CHAT_MONGO_DATABASE:-chat}
}


migrate() {
    /usr/bin/python3 "$TOP/conf/migrate.py" "$@"
}


start_redis() {
    pid_alive "$RUN/redis.pid" && return 0
    mkdir -p "$WORK/redis" "$RUN"

    log "starting Redis on 127.0.0.1:$CHAT_REDIS_PORT"
    redis-server --port "$CHAT_REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$WORK/redis" --daemonize no \
        --logfile "$WORK/redis/redis.log" >/dev/null 2>&1 &
    echo $! > "$RUN/redis.pid"
    wait_port "$CHAT_REDIS_PORT" Redis
}


start_mongo() {
    pid_alive "$RUN/mongo.pid" && return 0
    mkdir -p "$WORK/mongo" "$RUN"

    if command -v mongod >/dev/null; then
        log "starting mongod on 127.0.0.1:$CHAT_MONGO_PORT"
        mongod --bind_ip 127.0.0.1 --port "$CHAT_MONGO_PORT" \
            --dbpath "$WORK/mongo" --logpath "$WORK/mongo/mongod.log" \
            >/dev/null 2>&1 &
    else
        congo_install
        log "starting the MongoDB-compatible server on 127.0.0.1:$CHAT_MONGO_PORT"
        CONGO_LIB="$WORK/congo/lib/congodb/index.js" PORT=$CHAT_MONGO_PORT \
            node "$TOP/t/mongo-server.mjs" >"$WORK/mongo/server.log" 2>&1 &
    fi
    echo $! > "$RUN/mongo.pid"
    wait_port "$CHAT_MONGO_PORT" MongoDB
}


start_datastores() {
    start_mariadb
    start_redis
    start_mongo
}


# ---------------------------------------------------------------- nginx

# a value as the replacement of a sed s||| command
sed_value() {
    printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}


# conf/nginx.conf is a template: @NAME@ tokens are replaced by the values
# of the stack being started
render_conf() {
    local prefix=$1 limit_key='$binary_remote_addr' rate=$CHAT_RATE_LIMIT

    if [ "$rate" = 0 ]; then
        limit_key='""'
        rate=100
    fi

    mkdir -p "$prefix/conf" "$prefix/logs" "$prefix/tmp"
    cp "$TOP"/conf/chat-errors.conf "$prefix/conf/"

    sed -e "s|@PREFIX@|$prefix|g" \
        -e "s|@DOCS@|$WORK/docs|g" \
        -e "s|@LOAD_MODULES@|$(load_modules_list | sed 's|\([^ ]*\)|load_module \1;|g')|" \
        -e "s|@HTTP_PORT@|$CHAT_HTTP_PORT|g" \
        -e "s|@USER_PORT@|$CHAT_USER_PORT|g" \
        -e "s|@FRIEND_PORT@|$CHAT_FRIEND_PORT|g" \
        -e "s|@MSG_PORT@|$CHAT_MSG_PORT|g" \
        -e "s|@NOTIFY_PORT@|$CHAT_NOTIFY_PORT|g" \
        -e "s|@MYSQL_HOST@|$(sed_value "$CHAT_MYSQL_HOST")|g" \
        -e "s|@MYSQL_PORT@|$CHAT_MYSQL_PORT|g" \
        -e "s|@MYSQL_USER@|$(sed_value "$CHAT_MYSQL_USER")|g" \
        -e "s|@MYSQL_PASSWORD@|$(sed_value "$CHAT_MYSQL_PASSWORD")|g" \
        -e "s|@MYSQL_DATABASE@|$(sed_value "$CHAT_MYSQL_DATABASE")|g" \
        -e "s|@REDIS_PORT@|$CHAT_REDIS_PORT|g" \
        -e "s|@MONGO_URI@|$(sed_value "$CHAT_MONGO_URI")|g" \
        -e "s|@MONGO_DATABASE@|$(sed_value "$CHAT_MONGO_DATABASE")|g" \
        -e "s|@JWT_SECRET@|$CHAT_JWT_SECRET|g" \
        -e "s|@DEVELOPMENT@|chat_development on;|g" \
        -e "s|@RATE_LIMIT@|$rate|g" \
        -e "s|@RATE_BURST@|$((rate - 1))|g" \
        -e "s|@LIMIT_KEY@|$limit_key|g" \
        "$TOP/conf/nginx.conf" > "$prefix/conf/nginx.conf"
}


start_nginx() {
    local prefix=$1

    if pid_alive "$prefix/logs/nginx.pid"; then
        # a reload keeps the modules already loaded: new builds need a
        # restart
        if [ -z "$(find "$BUILD" -maxdepth 1 -name '*.so' \
                        -newer "$prefix/logs/nginx.pid")" ]
        then
            log "nginx already running in $prefix, reloading its configuration"
            render_conf "$prefix"
            "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log \
                -s reload
            return 0
        fi

        log "modules rebuilt: restarting nginx in $prefix"
        stop_pidfile "$prefix/logs/nginx.pid" QUIT
    fi

    render_conf "$prefix"
    "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log -t -q \
        || die "nginx -t failed for $prefix/conf/nginx.conf"
    log "starting nginx on 127.0.0.1:$CHAT_HTTP_PORT"
    "$NGINX" -p "$prefix/" -c conf/nginx.conf -e logs/error.log
    wait_port "$CHAT_HTTP_PORT" nginx
}


stop_pidfile() {
    local f=$1 sig=${2:-TERM} pid i

    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -CONT "$pid" 2>/dev/null || true
        kill -"$sig" "$pid" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}


stop() {
    stop_pidfile "$WORK/nginx/logs/nginx.pid" QUIT
    stop_pidfile "$WORK/nginx-test/logs/nginx.pid" QUIT
    stop_pidfile "$RUN/mongo.pid"
    stop_pidfile "$RUN/redis.pid"
    stop_pidfile "$RUN/mariadb.pid"
}


# ---------------------------------------------------------------- commands

run() {
    local own_mysql=${CHAT_MYSQL_HOST:-yes} own_mongo=${CHAT_MONGO_URI:-yes}

    datastore_env
    deps run
    build

    # a database given by the environment is migrated, never created
    if [ "$own_mysql" = yes ]; then
        start_mariadb
    fi
    start_redis
    if [ "$own_mongo" = yes ]; then
        start_mongo
    fi
    if [ "$own_mysql" = yes ]; then
        prepare_database
    else
        migrate
    fi

    start_nginx "$WORK/nginx"
    echo "nginx-chat is running: http://127.0.0.1:$CHAT_HTTP_PORT"
    echo "  (services on :$CHAT_USER_PORT :$CHAT_FRIEND_PORT :$CHAT_MSG_PORT" \
         ":$CHAT_NOTIFY_PORT; stop with ./build.sh stop)"
}


test_env() {
    export TEST_NGINX_BINARY=$NGINX
    export TEST_NGINX_LOAD_MODULES
    TEST_NGINX_LOAD_MODULES=$(load_modules_list)
    export TEST_NGINX_MYSQL_HOST=127.0.0.1
    export TEST_NGINX_MYSQL_PORT=$CHAT_MYSQL_PORT
    export TEST_NGINX_MYSQL_DATABASE=$CHAT_MYSQL_DATABASE
    export TEST_NGINX_REDIS_PORT=$CHAT_REDIS_PORT
    export TEST_NGINX_MONGO_PORT=$CHAT_MONGO_PORT
    export TEST_NGINX_MONGO_DATABASE=$CHAT_MONGO_DATABASE
    export TEST_NGINX_JWT_SECRET=$CHAT_JWT_SECRET
    export TEST_NGINX_MARIADB_PID=$RUN/mariadb.pid
    export TEST_NGINX_REDIS_PID=$RUN/redis.pid
    export TEST_NGINX_MONGO_PID=$RUN/mongo.pid
    export TEST_NGINX_WORK=$WORK
    export TEST_NGINX_STACK_PORT=$CHAT_HTTP_PORT
    # the block tests' own nginx: next to the test stack's gateway
    export TEST_NGINX_SERVER_PORT=${TEST_NGINX_SERVER_PORT:-$((CHAT_HTTP_PORT + 1))}
    export TEST_NGINX_SERVROOT=$WORK/servroot
    if [ "${CHAT_VALGRIND:-0}" = 1 ]; then
        export TEST_NGINX_USE_VALGRIND=1
    fi
}


# the test stack: own database, own ports (the stack's plus 10000, so
# checkouts run with different CHAT_*_PORTs test side by side), no rate
# limit except where a test sets one up itself; always the private
# servers, whatever CHAT_MYSQL_* and CHAT_MONGO_* say
test_stack_env() {
    unset CHAT_MYSQL_HOST CHAT_MYSQL_USER CHAT_MYSQL_PASSWORD CHAT_MONGO_URI
    export CHAT_MYSQL_DATABASE=chat_test CHAT_MONGO_DATABASE=chat_test
    datastore_env
    export CHAT_HTTP_PORT=${CHAT_TEST_HTTP_PORT:-$((CHAT_HTTP_PORT + 10000))}
    export CHAT_USER_PORT=${CHAT_TEST_USER_PORT:-$((CHAT_USER_PORT + 10000))}
    export CHAT_FRIEND_PORT=${CHAT_TEST_FRIEND_PORT:-$((CHAT_FRIEND_PORT + 10000))}
    export CHAT_MSG_PORT=${CHAT_TEST_MSG_PORT:-$((CHAT_MSG_PORT + 10000))}
    export CHAT_NOTIFY_PORT=${CHAT_TEST_NOTIFY_PORT:-$((CHAT_NOTIFY_PORT + 10000))}
    export CHAT_RATE_LIMIT=${CHAT_TEST_RATE_LIMIT:-0}
}


run_tests() {
    test_stack_env
    deps test
    build
    start_datastores
    mysql_root -e "DROP DATABASE IF EXISTS chat_test" 2>/dev/null || true
    prepare_database >/dev/null

    # the suite's own lines only (t/990 reads them all)
    if [ -f "$WORK/nginx-test/logs/access.log" ]; then
        : > "$WORK/nginx-test/logs/access.log"
    fi

    start_nginx "$WORK/nginx-test"
    test_env

    cd "$TOP"
    local rc=0

    if [ "${CHAT_SANITIZE:-0}" = 1 ]; then
        rm -f "$SANITIZE_LOGS"/asan.* "$SANITIZE_LOGS"/ubsan.*
    fi

    prove -I t/lib -r "${@:-t/}" || rc=$?
    stop_pidfile "$WORK/nginx-test/logs/nginx.pid" QUIT

    if [ "${CHAT_SANITIZE:-0}" = 1 ]; then
        sanitize_reports || rc=1
    fi

    return $rc
}


case "${1:-}" in
    deps)   deps test ;;
    build)  deps build; build ;;
    run)    run ;;
    test)   shift; run_tests "$@" ;;
    test-env) test_stack_env; test_env; export -p | grep ' TEST_NGINX_' ;;
    migrate) shift; datastore_env; deps migrate; migrate "$@" ;;
    bench)  shift; exec "$TOP/bench/run.sh" "$@" ;;
    stop)   stop ;;
    datastores) start_datastores ;;
    deb)    deps deb; deb ;;
    fuzz)   shift; deps fuzz; fuzz "$@" ;;
    *)      sed -n '3,/^[^#]/{/^#/p}' "$0"; exit 2 ;;
esac
