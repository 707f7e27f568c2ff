#!/usr/bin/env bash
# HTTP ceiling benchmark: GET /api/v1/users/{id} on the user service against nginx
# `return 200` with the same worker count, in one run, on loopback; prints the ratios.
#
#   bench/http.sh [--duration S] [--connections N] [--threads N] [--rounds N]
#                 [--backend sqlite|postgres]
#
# The targets are measured in turns (nginx, users, health, nginx, ...) for --rounds rounds and
# the medians are compared, so drift of a shared machine hits both sides alike.
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

bench_rounds "nginx return 200|http://127.0.0.1:$nport/|" \
    "GET /api/v1/users/{id}|http://127.0.0.1:$sport/api/v1/users/$id|$work/user.lua" \
    "GET /health|http://127.0.0.1:$sport/health|"
echo "goals: GET /api/v1/users/{id} ratio >= 0.70 with p99 <= 2 ms"
awk -v i="$idle_rss" -v l="$(rss_kb "$spid")" \
    'BEGIN { printf "user service RSS: idle %.1f MB (goal <= 8), after load %.1f MB\n", i / 1024, l / 1024 }'
