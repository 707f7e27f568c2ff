#!/usr/bin/env bash
# What observability costs: GET /api/v1/orders/{id} through the gateway with all of it on
# (spans at 100 % sampling from the gateway and the order service, exported as OTLP to the
# gateway's own receiver as under `microshop run`; the gateway's access log; metrics, which are
# always on) against all of it off (OTEL_SDK_DISABLED, no access log), in one run, with nginx
# `return 200` as the reference. Before each turn the gateway and the order service restart in
# the turn's mode, so the turns alternate over the rounds.
#
#   bench/observability.sh [--duration S] [--connections N] [--threads N] [--rounds N]
#                          [--backend sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
bench_parse_args "$@"
bench_setup
bench_start_nginx
bench_start_shop
bench_seed_shop 3 1
bench_first_order

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(MICROSHOP_JWT_SECRET=$secret "$bin" token --sub "${customers[0]}" --role customer --ttl 3600)
printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$token" >"$work/gateway.lua"
gw_port=$(free_port) admin_port=$(free_port) gw_pid=""

mode_env() { # label: the settings of its mode
    case "$1" in
    *"all on"*) echo "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$admin_port" \
        OTEL_TRACES_SAMPLER=parentbased_always_on MICROSHOP_ACCESS_LOG=on ;;
    *) echo OTEL_SDK_DISABLED=true MICROSHOP_ACCESS_LOG=off ;;
    esac
}

stop() { [ -n "$1" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }

# the gateway's log goes to a file: a terminal or a pipe would make the access log's cost
bench_before_run() { # label
    case "$1" in *gateway*) ;; *) return 0 ;; esac
    local env
    read -ra env <<<"$(mode_env "$1")"
    stop "$gw_pid"
    stop "$order_pid"
    bench_run_service order "$order_port" "${order_env[@]}" "${env[@]}"
    order_pid=$spid
    env MICROSHOP_ORDER_URL="http://127.0.0.1:$order_port" MICROSHOP_RATE_LIMIT_RPS=0 \
        MICROSHOP_JWT_SECRET="$secret" MICROSHOP_ADMIN_LISTEN="127.0.0.1:$admin_port" "${env[@]}" \
        "$bin" serve gateway --listen "127.0.0.1:$gw_port" --data "$work/data" \
        --threads "$workers" --log-level info 2>>"$work/gateway.log" &
    gw_pid=$!
    pids+=("$gw_pid")
    wait_port "$gw_port" health || { echo "the gateway did not start" >&2; exit 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$gw_port$path" \
        -H "Authorization: Bearer $token")
    [ "$code" = 200 ] || { echo "GET $path through the gateway answered $code" >&2; exit 1; }
}

path=/api/v1/orders/$first_order
bench_rounds "nginx return 200|http://127.0.0.1:$nport/|" \
    "gateway -> order, all off|http://127.0.0.1:$gw_port$path|$work/gateway.lua" \
    "gateway -> order, all on|http://127.0.0.1:$gw_port$path|$work/gateway.lua"

metric() { curl -s "http://127.0.0.1:$admin_port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo "last turn (all on): spans exported by the gateway $(metric trace_spans_exported_total)," \
    "dropped $(metric trace_spans_dropped_total); spans the receiver took" \
    "$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '/^otlp_receiver_spans_total.*accepted/ {print $2}');" \
    "access lines $(grep -c '"msg":"access"' "$work/gateway.log")"
