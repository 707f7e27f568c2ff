#!/usr/bin/env bash
# Event-store microbenchmark, in one run: durable appends/s with group commit and replay
# events/s on SQLite and on a throwaway PostgreSQL, and on that same PostgreSQL the
# one-row-per-transaction insert rate of pgbench (16 clients) as the reference.
#
# Appends come from one loop thread keeping --inflight one-event appends in flight over
# --streams streams, each with its exact expected version (es_bench.c says more). SQLite runs
# in two shapes: --streams hot streams with many events each, and the order service's own
# shape, a new stream for (nearly) every append (--new-streams, default 1,000,000): the
# (stream, version) index then grows at its end instead of at a thousand places per commit.
#
#   bench/eventstore.sh [--seconds S] [--inflight N] [--streams K] [--new-streams M]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=5
inflight=8192
streams=1000
new_streams=1000000
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --inflight) inflight=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --new-streams) new_streams=$2; shift 2 ;;
    *) echo "usage: $0 [--seconds S] [--inflight N] [--streams K] [--new-streams M]" >&2; exit 2 ;;
    esac
done
bench=${ES_BENCH:-build/es_bench}
[ -x "$bench" ] || { echo "no $bench: run 'make build' first" >&2; exit 1; }
work=$(mktemp -d /tmp/microshop-esbench.XXXXXX)
pgdir=""
cleanup() {
    [ -n "$pgdir" ] && bash tests/lib/pg.sh stop "$pgdir" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
args=(--seconds "$seconds" --inflight "$inflight" --streams "$streams")

echo "== SQLite (WAL, synchronous=FULL), ${seconds}s, $streams hot streams"
mkdir "$work/hot" "$work/new"
"$bench" sqlite "$work/hot" "${args[@]}" 2>/dev/null
echo "== SQLite (WAL, synchronous=FULL), ${seconds}s, $new_streams streams (one per order, as the order service writes)"
"$bench" sqlite "$work/new" --seconds "$seconds" --inflight "$inflight" --streams "$new_streams" 2>/dev/null

echo "== PostgreSQL (throwaway, loopback), ${seconds}s"
pgdir=$(mktemp -d /tmp/microshop-esbench-pg.XXXXXX)
url=$(bash tests/lib/pg.sh start "$pgdir")
"$bench" postgres "$url" "${args[@]}" 2>/dev/null | tee "$work/pg.out"
es_line=$(head -1 "$work/pg.out")
psql -q "$url" -c "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, data TEXT NOT NULL)"
echo "INSERT INTO bench_rows (data) VALUES ('{\"order_id\":\"0190c2a4\",\"total_cents\":3998}');" >"$work/insert.sql"
pgb=$(pgbench -n -c 16 -j 2 -T "$seconds" -f "$work/insert.sql" "$url" 2>/dev/null |
    awk '/^tps/ {print $3; exit}')
echo "pgbench, 16 clients, one INSERT per transaction: $pgb tps"
es=$(awk '{print $3}' <<<"$es_line" | tr -d '/s')
awk -v e="$es" -v p="$pgb" 'BEGIN { printf "ratio event store / pgbench: %.1f (goal >= 5)\n", e / p }'
