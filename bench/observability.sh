#!/usr/bin/env bash
# What observability costs: GET /api/v1/orders/{id} through the gateway, in one run, with the
# gateway and the order service restarted in each turn's mode before the turn (so the turns
# alternate over the rounds); nginx `return 200` is the reference. The modes:
#
#   off   all of it off: OTEL_SDK_DISABLED=true, no access log (metrics are always on)
#   on    all of it on: spans at 100 % sampling from both processes, exported as OTLP to an
#         external collector (a second nginx answering `return 200` on loopback stands in for
#         one), the gateway's JSON access log into a file, metrics
#   log   the access log alone
#   spans spans exported to the external sink alone (no access log)
#   self  all on, with spans exported to the gateway's own receiver (POST /v1/traces on its
#         admin listener) as under `microshop run`
#
# OTLP log export is off in every mode (OTEL_LOGS_EXPORTER=none).
#
#   bench/observability.sh [--modes off,on,...] [--duration S] [--connections N] [--threads N]
#                          [--rounds N] [--backend sqlite|postgres]
#
# Default modes: off,on. Set BENCH_PERF=DIR to `perf record -g` the gateway and the order
# service during every turn (DIR/gateway.MODE.N.data, DIR/order.MODE.N.data; needs perf).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
modes=off,on
args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --modes) modes=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
    esac
done
bench_usage="[--modes off,on,log,spans,self] $bench_usage"
bench_parse_args ${args[@]+"${args[@]}"}
IFS=, read -ra mode_list <<<"$modes"
for m in "${mode_list[@]}"; do
    case "$m" in off | on | log | spans | self) ;; *) echo "unknown mode $m" >&2; exit 2 ;; esac
done
bench_setup
bench_start_nginx sink 'return 200;'
sink_port=$nport sink_pid=${pids[-1]}
bench_start_nginx
bench_start_shop
bench_seed_shop 3 1
bench_first_order

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
token=$(MICROSHOP_JWT_SECRET=$secret "$bin" token --sub "${customers[0]}" --role customer --ttl 3600)
printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$token" >"$work/gateway.lua"
gw_port=$(free_port) admin_port=$(free_port) gw_pid=""

mode_env() { # mode: the settings of its mode (one line)
    local spans="OTEL_TRACES_SAMPLER=parentbased_always_on OTEL_EXPORTER_OTLP_ENDPOINT"
    case "$1" in
    off) echo OTEL_LOGS_EXPORTER=none OTEL_SDK_DISABLED=true MICROSHOP_ACCESS_LOG=off ;;
    on) echo OTEL_LOGS_EXPORTER=none "$spans=http://127.0.0.1:$sink_port" MICROSHOP_ACCESS_LOG=on ;;
    log) echo OTEL_LOGS_EXPORTER=none OTEL_SDK_DISABLED=true MICROSHOP_ACCESS_LOG=on ;;
    spans) echo OTEL_LOGS_EXPORTER=none "$spans=http://127.0.0.1:$sink_port" MICROSHOP_ACCESS_LOG=off ;;
    self) echo OTEL_LOGS_EXPORTER=none "$spans=http://127.0.0.1:$admin_port" MICROSHOP_ACCESS_LOG=on ;;
    esac
}

stop() { [ -n "$1" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }

perf_pids=() perf_turn=0
# the gateway's log goes to a file: a terminal or a pipe would make the access log's cost
bench_before_run() { # label
    local mode=${1#gateway -> order, } env
    [ "$mode" != "$1" ] || return 0
    read -ra env <<<"$(mode_env "$mode")"
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
    last_mode=$mode access_before=$(grep -c '"msg":"access"' "$work/gateway.log" || true)
    cpu_before=$(turn_cpu)
    if [ -n "${BENCH_PERF:-}" ]; then
        perf_turn=$((perf_turn + 1))
        mkdir -p "$BENCH_PERF"
        perf record -g -q -o "$BENCH_PERF/gateway.$mode.$perf_turn.data" -p "$gw_pid" 2>/dev/null &
        perf_pids=($!)
        perf record -g -q -o "$BENCH_PERF/order.$mode.$perf_turn.data" -p "$order_pid" 2>/dev/null &
        perf_pids+=($!)
    fi
}

# CPU ticks (user + system) of the gateway, the order service and the sink (its workers)
turn_cpu() {
    local sink=0 p
    for p in $sink_pid $(pgrep -P "$sink_pid"); do sink=$((sink + $(cpu_ticks "$p"))); done
    echo "$(cpu_ticks "$gw_pid") $(cpu_ticks "$order_pid") $sink"
}

# after a gateway turn: the CPU each process spent per request, in µs, into $work/cpu.MODE
bench_after_run() { # label
    local p mode=${1#gateway -> order, }
    for p in ${perf_pids[@]+"${perf_pids[@]}"}; do kill -INT "$p" && wait "$p" || true; done
    perf_pids=()
    [ "$mode" != "$1" ] || return 0
    # $i is bench_rounds' turn index: its result file's last line is this turn's wrk run
    awk -v b="$cpu_before" -v a="$(turn_cpu)" -v rps="$(tail -1 "$work/result.$i" | cut -d' ' -f1)" \
        -v d="$duration" -v hz="$(getconf CLK_TCK)" 'BEGIN { split(b, x); split(a, y)
            for (k = 1; k <= 3; k++) printf "%.1f ", (y[k] - x[k]) * 1e6 / hz / (rps * d); print "" }' \
        >>"$work/cpu.$mode"
}

path=/api/v1/orders/$first_order
turns=("nginx return 200|http://127.0.0.1:$nport/|")
for m in "${mode_list[@]}"; do
    turns+=("gateway -> order, $m|http://127.0.0.1:$gw_port$path|$work/gateway.lua")
done
bench_rounds "${turns[@]}" >"$work/summary" # not in a subshell: it starts the services
summary=$(cat "$work/summary")
echo "$summary"
# each mode as a ratio to all off, when it ran
rps_of() { sed -nE "s/^median gateway -> order, $1 +([0-9]+) req\/s.*/\1/p" <<<"$summary"; }
off_rps=$(rps_of off)
if [ -n "$off_rps" ]; then
    for m in "${mode_list[@]}"; do
        awk -v m="$m" -v r="$(rps_of "$m")" -v off="$off_rps" \
            'BEGIN { printf "%-6s %.3f of all off (cost %+.1f %%)\n", m, r / off, 100 * (1 - r / off) }'
    done
fi

echo "CPU per request (µs, median over the rounds): gateway, order service, OTLP sink"
for m in "${mode_list[@]}"; do
    printf '%-6s %6.1f %6.1f %6.1f\n' "$m" "$(cut -d' ' -f1 "$work/cpu.$m" | median)" \
        "$(cut -d' ' -f2 "$work/cpu.$m" | median)" "$(cut -d' ' -f3 "$work/cpu.$m" | median)"
done

metric() { curl -s "http://127.0.0.1:$admin_port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
echo "last turn ($last_mode): spans exported by the gateway $(metric trace_spans_exported_total)," \
    "dropped $(metric trace_spans_dropped_total); spans the receiver took" \
    "$(curl -s "http://127.0.0.1:$admin_port/metrics" | awk '/^otlp_receiver_spans_total.*accepted/ {print $2}');" \
    "access lines $(($(grep -c '"msg":"access"' "$work/gateway.log" || true) - access_before))"
