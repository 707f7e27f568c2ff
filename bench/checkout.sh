#!/usr/bin/env bash
# The checkout saga against nginx `return 200`, in one run: POST /api/v1/orders through user,
# inventory and payment (quote, reserve, charge, confirm), then a reconciliation of what the
# three services hold and the CPU each spent per checkout, then the saga resume time: sagas
# caught in flight by a kill -9 of the order service (the payment service slowed by its chaos
# latency), and how long after the restart the last pending order ends.
#
#   bench/checkout.sh [--duration S] [--connections N] [--threads N] [--rounds N]
#                     [--backend sqlite|postgres]
#
# Load: each POST a random registered customer, 1-3 random products (1-3 units each, from a
# stock no run exhausts), the always-accepted sandbox card, no Idempotency-Key; 32 connections.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
connections=32
bench_parse_args "$@"
bench_setup
bench_start_nginx
bench_start_shop
bench_seed_shop 8 20
bench_checkout_lua "$work/checkout.lua"
order_url=http://127.0.0.1:$order_port

bench_first_order

# Orders whose saga has not decided them yet, in the event store (the truth: an order may be
# stored before the read model shows it) and in the read model (what a client sees).
pending_sql="SELECT count(*) FROM events c WHERE c.type = 'OrderCreated' AND NOT EXISTS
    (SELECT 1 FROM events d WHERE d.stream_id = c.stream_id AND d.type IN ('OrderConfirmed', 'OrderRejected'))"
pending() {
    echo $(($(bench_sql order order.db "$pending_sql") +
        $(bench_sql order order_read.db "SELECT count(*) FROM order_views WHERE status = 'pending'")))
}

# Polls until no order is pending (at most 30 s from START, in ns since the epoch); prints the
# milliseconds from START and the number of polls, or "timeout". On SQLite one process polls
# both files (a process per poll would take longer than the resume).
wait_no_pending() { # start
    if [ "$backend" = postgres ]; then # one psql session, the query repeated by \watch
        # Each row carries the server's clock when it was counted: this loop reads rows more
        # slowly than psql makes them, and timing the read would add that lag to the resume.
        local polls=0 n at watch
        exec {watch}< <(printf '%s\n\\watch 0.005\n' "SELECT ($pending_sql) +
            (SELECT count(*) FROM order_views WHERE status = 'pending'),
            (extract(epoch FROM clock_timestamp()) * 1e9)::bigint" |
            psql -qAt -F ' ' "${db_urls[order]}" 2>/dev/null)
        while read -r -u "$watch" n at; do
            [ -n "$n" ] || continue
            polls=$((polls + 1))
            [ "$n" = 0 ] && break
            [ $((at - $1)) -lt 30000000000 ] || { n=timeout; break; }
        done
        exec {watch}<&-
        if [ "$n" = 0 ]; then echo "$(((at - $1) / 1000000)) $polls"; else echo timeout; fi
        return
    fi
    /usr/bin/python3 - "$work/data" "$1" "$pending_sql" <<'PY'
import sqlite3, sys, time
data, start, sql = sys.argv[1], int(sys.argv[2]), sys.argv[3]
view = "SELECT count(*) FROM order_views WHERE status = 'pending'"
conns = {}
def count(file, query):
    try:
        if file not in conns:
            conns[file] = sqlite3.connect(f"file:{data}/{file}?mode=ro", uri=True, timeout=5)
        return conns[file].execute(query).fetchone()[0]
    except sqlite3.OperationalError:  # the restarted service is migrating its files
        conns.pop(file, None)
        return -1
polls = 0
while True:
    polls += 1
    if count("order.db", sql) == 0 and count("order_read.db", view) == 0:
        break
    if time.time_ns() - start > 30e9:
        print("timeout")
        sys.exit()
    time.sleep(0.002)
print((time.time_ns() - start) // 1000000, polls)
PY
}

# Confirmed orders (count, cents, units) from the event store, captured payments (count, cents)
# and held reservations (count, units, and the units the stock levels count as reserved).
if [ "$backend" = postgres ]; then
    total="(c.data::json->>'total_cents')::bigint"
    units="SELECT COALESCE(SUM((j->>'quantity')::bigint), 0) FROM events c, json_array_elements(c.data::json->'items') j"
else
    total="json_extract(c.data, '$.total_cents')"
    units="SELECT COALESCE(SUM(json_extract(j.value, '$.quantity')), 0) FROM events c, json_each(c.data, '$.items') j"
fi
confirmed="c.type = 'OrderCreated' AND EXISTS
    (SELECT 1 FROM events d WHERE d.stream_id = c.stream_id AND d.type = 'OrderConfirmed')"
reconcile() {
    local orders payments holds rejected
    orders=$(bench_sql order order.db "SELECT (SELECT count(*) FROM events c WHERE $confirmed),
        (SELECT COALESCE(SUM($total), 0) FROM events c WHERE $confirmed), ($units WHERE $confirmed)")
    rejected=$(bench_sql order order.db "SELECT count(*) FROM events WHERE type = 'OrderRejected'")
    payments=$(bench_sql payment payment.db \
        "SELECT count(*), COALESCE(SUM(amount_cents), 0) FROM payments WHERE status = 'captured'")
    holds=$(bench_sql inventory inventory.db "SELECT
        (SELECT count(*) FROM reservations WHERE status = 'reserved'),
        (SELECT COALESCE(SUM(l.quantity), 0) FROM reservations r JOIN reservation_lines l
             ON l.order_id = r.order_id WHERE r.status = 'reserved'),
        (SELECT COALESCE(SUM(reserved), 0) FROM stock_levels)")
    IFS='|' read -r o_n o_cents o_units <<<"$orders"
    IFS='|' read -r p_n p_cents <<<"$payments"
    IFS='|' read -r r_n r_units s_units <<<"$holds"
    verdict=MISMATCH
    [ "$o_n" = "$p_n" ] && [ "$o_n" = "$r_n" ] && [ "$o_cents" = "$p_cents" ] &&
        [ "$o_units" = "$r_units" ] && [ "$o_units" = "$s_units" ] && verdict=OK
    reconciliation="$o_n confirmed orders ($o_units units, $o_cents cents), $p_n captured payments ($p_cents cents), $r_n reservations held ($r_units units; stock levels $s_units reserved); $rejected rejected: $verdict"
    [ "$verdict" = OK ]
}
# Waits (at most S seconds) until no order is pending and the three services agree, then
# prints the reconciliation line.
settle() { # label seconds
    local deadline=$((SECONDS + $2)) left
    while :; do
        left=$(pending)
        reconcile && [ "$left" = 0 ] && break
        [ $SECONDS -lt "$deadline" ] || break
        sleep 0.2
    done
    echo "reconciliation $1: $reconciliation (pending: $left)"
}

# CPU per checkout of each service over the checkout runs (orders counted in the event store).
shop=("user:$user_pid" "inventory:$inv_pid" "payment:$pay_pid" "order:$order_pid")
declare -A cpu=()
orders=0
created() { bench_sql order order.db "SELECT count(*) FROM events WHERE type = 'OrderCreated'"; }
bench_before_run() {
    case "$1" in checkout*)
        for s in "${shop[@]}"; do cpu[${s%%:*}]=$((${cpu[${s%%:*}]:-0} - $(cpu_ticks "${s#*:}"))); done
        orders=$((orders - $(created))) ;;
    esac
}
bench_after_run() {
    case "$1" in checkout*)
        for s in "${shop[@]}"; do cpu[${s%%:*}]=$((${cpu[${s%%:*}]} + $(cpu_ticks "${s#*:}"))); done
        orders=$((orders + $(created))) ;;
    esac
}

bench_rounds "nginx return 200|http://127.0.0.1:$nport/|" \
    "checkout POST /api/v1/orders|$order_url/api/v1/orders|$work/checkout.lua"
for s in "${shop[@]}"; do echo "${s%%:*} ${cpu[${s%%:*}]}"; done |
    awk -v n="$orders" -v hz="$(getconf CLK_TCK)" '{ us = $2 * 1e6 / hz / n; all += us
        line = line sprintf("%s %.0f us, ", $1, us) }
        END { printf "CPU per checkout (%d orders): %sall %.0f us\n", n, line, all }'
settle "after the load" 30

# Saga resume: slow every charge so that checkouts are in flight (4 times as many connections
# as the load above), kill -9 the order service in the middle of the load, take the chaos away
# (the resume is measured, not the chaos), restart it, and poll from the moment it is started.
chaos() { curl -sf -o /dev/null -X PUT "http://127.0.0.1:$pay_port/internal/v1/chaos" \
    -H 'Content-Type: application/json' -d "{\"latency_ms\":$1,\"failure_rate\":0}"; }
chaos 3000
wrk -t1 -c$((connections * 4)) -d30s -s "$work/checkout.lua" "$order_url/api/v1/orders" >/dev/null 2>&1 &
load=$!
sleep 2
kill -9 "$order_pid"
killed=$SECONDS
wait "$order_pid" 2>/dev/null || true
kill "$load"
wait "$load" 2>/dev/null || true
chaos 0
in_flight=$(bench_sql order order.db "$pending_sql")
start=$(date +%s%N)
bench_spawn_service order "$order_port" "${order_env[@]}"
order_pid=$spid
read -r ms polls < <(wait_no_pending "$start")
[ "$ms" != timeout ] || { echo "saga resume: $in_flight pending, still $(pending) after 30 s" >&2; exit 1; }
awk -v n="$in_flight" -v ms="$ms" -v polls="$polls" 'BEGIN {
    printf "saga resume: %d pending ended in %d ms (from the restart; %d polls, one every %.1f ms)\n",
        n, ms, polls, ms / polls }'
wait_port "$order_port" health
# charges sent before the kill are still waiting out their chaos latency: let them land first
sleep $((killed + 4 - SECONDS > 0 ? killed + 4 - SECONDS : 0))
settle "after the resume" 30
