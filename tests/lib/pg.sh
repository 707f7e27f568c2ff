#!/bin/sh
# pg.sh — a throwaway PostgreSQL 15 for tests.
#   tests/lib/pg.sh start DIR   initdb in DIR (a fresh temp dir), start on a free 127.0.0.1 port,
#                               print postgresql://postgres@127.0.0.1:PORT/postgres
#   tests/lib/pg.sh stop DIR    stop it and remove DIR
# initdb refuses to run as root, so as root the server runs as the postgres user.
set -eu

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    # The port is free now, not reserved: if another process takes it first, start fails loudly.
    # 300 connections: the suite runs test files in parallel, each starting whole shops whose
    # services keep pools of their own; two such files at once can hold more than the default 100.
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null ||
        { cat "$dir/server.log" >&2; exit 1; }
    i=0
    until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port"; do
        i=$((i + 1))
        [ $i -lt 100 ] || { echo "postgres did not become ready" >&2; exit 1; }
        sleep 0.1
    done
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
