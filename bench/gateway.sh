#!/usr/bin/env bash
# Gateway benchmark: GET /api/v1/orders/{id} through the gateway against nginx as a reverse
# proxy (proxy_pass, upstream keepalive 32) in front of the same order service, in one run on
# loopback; nginx `return 200` is the HTTP ceiling and the order service asked directly the
# floor. The gateway verifies a JWT on every request and records its metrics as always.
#
#   bench/gateway.sh [--duration S] [--connections N] [--threads N] [--rounds N]
#                    [--backend sqlite|postgres]
#
# Then the latency a hop adds: p50 at one connection, through each proxy minus direct.
# Needs wrk and nginx (scripts/bootstrap.sh bench) and a built binary (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_parse_args "$@"
bench_setup
bench_start_nginx
bench_start_shop
bench_seed_shop 3 1
bench_first_order

# the gateway verifies an HS256 JWT on every request (no identity secret: the services take
# the forwarded X-User-Id as nginx passes it, so both proxies reach the service alike)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(MICROSHOP_JWT_SECRET=$secret "$bin" token --sub "${customers[0]}" --role customer --ttl 3600)
auth=(-H "Authorization: Bearer $token")
gw_env=(MICROSHOP_ORDER_URL="http://127.0.0.1:$order_port" MICROSHOP_RATE_LIMIT_RPS=0
    MICROSHOP_JWT_SECRET="$secret")
bench_start_service gateway "${gw_env[@]}"
gw_port=$sport

ref_port=$nport
bench_start_nginx proxy 'proxy_pass http://order; proxy_http_version 1.1; proxy_set_header Connection "";' \
    "upstream order { server 127.0.0.1:$order_port; keepalive 32; }"
pport=$nport nport=$ref_port

path=/api/v1/orders/$first_order
lua() { # file header-args...: a wrk script sending the headers
    local f=$1
    shift
    : >"$f"
    while [ $# -gt 0 ]; do
        printf 'wrk.headers["%s"] = "%s"\n' "${2%%: *}" "${2#*: }" >>"$f"
        shift 2
    done
}
lua "$work/direct.lua" -H "X-User-Id: ${customers[0]}" -H 'X-User-Role: customer'
lua "$work/gateway.lua" "${auth[@]}"
for url in "http://127.0.0.1:$pport$path" "http://127.0.0.1:$gw_port$path"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url" -H "X-User-Id: ${customers[0]}" \
        -H 'X-User-Role: customer' "${auth[@]}")
    [ "$code" = 200 ] || { echo "GET $url answered $code" >&2; exit 1; }
done

bench_rounds "nginx return 200|http://127.0.0.1:$nport/|" \
    "nginx proxy_pass -> order|http://127.0.0.1:$pport$path|$work/direct.lua" \
    "gateway -> order|http://127.0.0.1:$gw_port$path|$work/gateway.lua" \
    "order direct|http://127.0.0.1:$order_port$path|$work/direct.lua"

echo "latency a hop adds, p50 at one connection (${duration}s each):"
connections=1
p50() { run_wrk "$@" | awk '{print $3}'; }
direct=$(p50 "order direct, c1" "http://127.0.0.1:$order_port$path" "$work/direct.lua")
proxy=$(p50 "nginx proxy, c1" "http://127.0.0.1:$pport$path" "$work/direct.lua")
gw=$(p50 "gateway, c1" "http://127.0.0.1:$gw_port$path" "$work/gateway.lua")
awk -v d="$direct" -v p="$proxy" -v g="$gw" 'BEGIN {
    printf "  p50 direct %.3f ms, nginx proxy %.3f ms (+%.0f us), gateway %.3f ms (+%.0f us)\n",
           d, p, (p - d) * 1000, g, (g - d) * 1000 }'
echo "goals: gateway -> order >= 1.0x nginx proxy_pass -> order; added p50 per hop <= 100 us"
