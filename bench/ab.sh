#!/usr/bin/env bash
# Two builds of the order service side by side, each POST run as a ratio to an nginx run of the
# same round: this VM's speed drifts by a fifth between minutes (nginx alone 52–90k req/s), so
# only runs that alternate, and their ratio, tell a change from the drift.
#
#   bench/ab.sh BINARY_A BINARY_B [--rounds N] [--duration S] [--connections N]
#
# Prints each round's nginx, A and B req/s, B/A, and the median B/A. Both order services run for
# the whole script (each on its own port and data directory); only one is loaded at a time. Each
# POST is a checkout: both reach one user, inventory and payment service (binary A) started here.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# -ge 2 ] || { echo "usage: $0 BINARY_A BINARY_B $bench_usage" >&2; exit 2; }
bin_a=$1 bin_b=$2
shift 2
duration=3
rounds=6
bench_parse_args "$@"
MS_BINARY=$bin_a bench_setup
bench_start_nginx
bench_start_backends
bench_seed_shop 8 20
bench_checkout_lua "$work/post.lua"
bench_start_service order "${shop_env[@]}"
port_a=$sport
bin=$bin_b
work=$work/b bench_start_service order "${shop_env[@]}" # its data in $work/b/data
port_b=$sport

rps() { wrk -t1 -c"$connections" -d"${duration}s" ${2:+-s "$2"} "$1" | awk '/^Requests\/sec/ {print $2}'; }
for port in "$port_a" "$port_b"; do rps "http://127.0.0.1:$port/api/v1/orders" "$work/post.lua" >/dev/null; done
echo "wrk -t1 -c$connections -d${duration}s, $rounds rounds; A=$bin_a B=$bin_b"
for _ in $(seq "$rounds"); do
    n=$(rps "http://127.0.0.1:$nport/")
    a=$(rps "http://127.0.0.1:$port_a/api/v1/orders" "$work/post.lua")
    b=$(rps "http://127.0.0.1:$port_b/api/v1/orders" "$work/post.lua")
    awk -v n="$n" -v a="$a" -v b="$b" 'BEGIN {
        printf "nginx %6.0f   A %6.0f (%.3f)   B %6.0f (%.3f)   B/A %.3f\n", n, a, a / n, b, b / n, b / a }'
done | tee "$work/rounds.txt"
awk '{print $NF}' "$work/rounds.txt" | median | awk '{printf "median B/A %.3f\n", $1}'
