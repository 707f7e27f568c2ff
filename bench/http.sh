#!/usr/bin/env bash
# HTTP ceiling benchmark: GET /api/v1/users/{id} on the user service against nginx
# `return 200` with the same worker count, in one run, on loopback; prints the ratios.
#
#   bench/http.sh [--duration S] [--connections N] [--threads N] [--rounds N]
#                 [--backend sqlite|postgres]
#
# The targets are measured in turns (nginx, users, health, nginx, ...) for --rounds rounds and
# the medians are compared, so drift of a shared machine hits both sides alike. On PostgreSQL,
# `pgbench -S -M prepared -c <connections> -j 2` runs after GET user in every round against the
# same server, and the ratio GET user / pgbench is printed per round and as the median.
# Needs wrk and nginx (scripts/bootstrap.sh bench) and a built binary (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_parse_args "$@"
bench_setup
bench_start_nginx
bench_start_service user
sleep 0.5
idle_rss=$(rss_kb "$spid")

id=$(curl -s -X POST "http://127.0.0.1:$sport/api/v1/users" -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","name":"Bench","password":"bench-password-1"}' |
    sed -E 's/.*"id":"([^"]+)".*/\1/')
cat >"$work/user.lua" <<LUA
wrk.headers["X-User-Id"] = "$id"
wrk.headers["X-User-Role"] = "customer"
LUA
curl -sf "http://127.0.0.1:$sport/api/v1/users/$id" -H "X-User-Id: $id" -H 'X-User-Role: customer' >/dev/null ||
    { echo "GET /api/v1/users/{id} does not answer 200" >&2; exit 1; }

if [ "$backend" = postgres ]; then
    bench_pgbench_init
    : >"$work/pgbench"
    bench_after_run() {
        if [ "$1" = "GET /api/v1/users/{id}" ]; then run_pgbench >>"$work/pgbench"; fi
    }
fi

bench_rounds "nginx return 200|http://127.0.0.1:$nport/|" \
    "GET /api/v1/users/{id}|http://127.0.0.1:$sport/api/v1/users/$id|$work/user.lua" \
    "GET /health|http://127.0.0.1:$sport/health|"
echo "goals: GET /api/v1/users/{id} ratio >= 0.70 with p99 <= 2 ms"
if [ "$backend" = postgres ]; then
    # result.2 holds GET user's runs, one line per round, beside pgbench's of the same round
    paste -d' ' <(cut -d' ' -f1 "$work/result.2") "$work/pgbench" |
        awk '{ r = $2 > 0 ? $1 / $2 : 0; printf "%s%.2f", (NR > 1 ? " " : ""), r }
             END { print "" }' >"$work/ratios"
    awk -v c="$connections" -v d="$duration" -v tps="$(median <"$work/pgbench")" \
        -v r="$(tr ' ' '\n' <"$work/ratios" | median)" -v per="$(cat "$work/ratios")" \
        'BEGIN { printf "pgbench -S -M prepared -c %d -j 2 -T %d: median %.0f tps\n", c, d, tps
                 printf "GET /api/v1/users/{id} / pgbench: per round %s, median %.2f (goal >= 0.50)\n", per, r }'
fi
awk -v i="$idle_rss" -v l="$(rss_kb "$spid")" \
    'BEGIN { printf "user service RSS: idle %.1f MB (goal <= 8), after load %.1f MB\n", i / 1024, l / 1024 }'
