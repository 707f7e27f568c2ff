# bench/lib.sh — what every HTTP benchmark shares (sourced, not run): options, a work dir
# cleaned on exit, nginx `return 200` as the reference, a microshop target on SQLite or a
# throwaway PostgreSQL, wrk runs in turns over rounds, medians and ratios to nginx.
# The variables it sets (ports, pids, ids) are read by the scripts that source it:
# shellcheck shell=bash disable=SC2034

bench_usage="[--duration S] [--connections N] [--threads N] [--rounds N] [--backend sqlite|postgres]"
duration=10
connections=64
workers=$(nproc)
backend=sqlite
rounds=3

bench_parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
        --duration) duration=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        --threads) workers=$2; shift 2 ;;
        --backend) backend=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        *) echo "usage: $0 $bench_usage" >&2; exit 2 ;;
        esac
    done
}

bench_setup() {
    bin=${MS_BINARY:-build/microshop}
    [ -x "$bin" ] || { echo "no $bin: run 'make build' first" >&2; exit 1; }
    command -v wrk >/dev/null && command -v nginx >/dev/null ||
        { echo "wrk and nginx are needed: bash scripts/bootstrap.sh bench" >&2; exit 1; }
    work=$(mktemp -d /tmp/microshop-bench.XXXXXX)
    pids=()
    pgdir=""
    declare -gA db_urls=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    local i # the last started first, each gone before the next: an order service drains its
    # checkouts while the services it calls still answer
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[i]}" 2>/dev/null && wait "${pids[i]}" 2>/dev/null
    done
    wait 2>/dev/null || true
    [ -n "$pgdir" ] && bash tests/lib/pg.sh stop "$pgdir" >/dev/null 2>&1
    rm -rf "$work"
}

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/${2:-}" && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# nginx with the same number of workers; sets nport. By default `return 200` (the HTTP
# ceiling); a NAME, the body of its `location /` and further http-level lines make another
# (a reverse proxy, for instance).
bench_start_nginx() { # [name] [location body] [http lines]
    local name=${1:-nginx} location=${2:-"return 200 '{\"status\":\"ok\"}';"} extra=${3:-}
    nport=$(free_port)
    mkdir -p "$work/$name"
    cat >"$work/$name/nginx.conf" <<NGINX
worker_processes $workers;
daemon off;
error_log $work/$name/error.log warn;
pid $work/$name/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/$name;
    proxy_temp_path $work/$name;
    $extra
    server {
        listen 127.0.0.1:$nport reuseport;
        location / { $location }
    }
}
NGINX
    nginx -c "$work/$name/nginx.conf" -p "$work/$name" &
    pids+=($!)
    wait_port "$nport" || { echo "nginx ($name) did not start" >&2; exit 1; }
}

# On PostgreSQL every service gets a database of its own (named NAME) in one throwaway server
# started for the run; sets db_url.
bench_pg_database() { # name
    if [ -z "$pgdir" ]; then
        pgdir=$(mktemp -d /tmp/microshop-bench-pg.XXXXXX)
        pgurl=$(bash tests/lib/pg.sh start "$pgdir")
    fi
    psql -q "$pgurl" -c "CREATE DATABASE $1" >/dev/null
    db_url=${pgurl%/*}/$1
}

# microshop serve TARGET [VAR=VALUE ...] on a free port, with its own database; sets sport,
# spid and senv (the environment it was given, to start it again with bench_run_service).
bench_start_service() { # target [VAR=VALUE ...]
    local target=$1
    shift
    sport=$(free_port)
    senv=("$@")
    if [ "$backend" = postgres ]; then
        bench_pg_database "bench_${target}_${#pids[@]}"
        senv+=(DATABASE_URL="$db_url")
        db_urls[$target]=$db_url
    fi
    bench_run_service "$target" "$sport" "${senv[@]}"
}

# Starts microshop serve TARGET on PORT (again, after a crash) and waits for it; sets spid.
bench_run_service() { # target port [VAR=VALUE ...]
    bench_spawn_service "$@"
    wait_port "$2" health || { echo "microshop $1 did not start" >&2; exit 1; }
}

# The same without waiting for it to answer.
bench_spawn_service() { # target port [VAR=VALUE ...]
    local target=$1 port=$2
    shift 2
    env "$@" "$bin" serve "$target" --listen "127.0.0.1:$port" --data "$work/data" \
        --threads "$workers" --log-level warn &
    spid=$!
    pids+=("$spid")
}

# The services an order needs (user, inventory, payment); sets user_port, inv_port, pay_port,
# their pids (user_pid, ...) and shop_env, the MICROSHOP_*_URL settings an order service takes
# to reach them.
bench_start_backends() {
    bench_start_service user
    user_port=$sport user_pid=$spid
    bench_start_service inventory
    inv_port=$sport inv_pid=$spid
    bench_start_service payment
    pay_port=$sport pay_pid=$spid
    shop_env=(MICROSHOP_USER_URL="http://127.0.0.1:$user_port"
        MICROSHOP_INVENTORY_URL="http://127.0.0.1:$inv_port"
        MICROSHOP_PAYMENT_URL="http://127.0.0.1:$pay_port")
}

# The whole shop: the backends and an order service wired to them; sets also order_port,
# order_pid and order_env (the order service's environment, to restart it).
bench_start_shop() {
    bench_start_backends
    bench_start_service order "${shop_env[@]}"
    order_port=$sport order_pid=$spid order_env=("${senv[@]}")
}

# Adds N products (each with a stock no run can exhaust) through the inventory's admin API and
# registers M customers; sets products and customers (their ids).
bench_seed_shop() { # n_products n_customers
    local admin=0190c2a4-0000-7000-8000-0000000ad001 i id
    products=() customers=()
    for i in $(seq "$1"); do
        id=$(curl -sf -X POST "http://127.0.0.1:$inv_port/api/v1/products" \
            -H 'Content-Type: application/json' -H "X-User-Id: $admin" -H 'X-User-Role: admin' \
            -d "{\"sku\":\"BENCH-$i\",\"name\":\"Bench product $i\",\"price_cents\":$((250 + 500 * i)),
                 \"currency\":\"EUR\",\"stock\":100000000}" | sed -E 's/.*"id":"([^"]+)".*/\1/') ||
            { echo "the inventory did not add product $i" >&2; exit 1; }
        products+=("$id")
    done
    for i in $(seq "$2"); do
        id=$(curl -sf -X POST "http://127.0.0.1:$user_port/api/v1/users" \
            -H 'Content-Type: application/json' \
            -d "{\"email\":\"bench-$i@example.com\",\"name\":\"Bench $i\",\"password\":\"bench-password-$i\"}" |
            sed -E 's/.*"id":"([^"]+)".*/\1/') || { echo "the user service did not register customer $i" >&2; exit 1; }
        customers+=("$id")
    done
}

# The checkout load into FILE: each POST /api/v1/orders from a random customer, for 1-3 random
# products (1-3 units each), paid with the sandbox card that is always accepted, no
# Idempotency-Key. Needs bench_seed_shop (at least 3 products).
bench_checkout_lua() { # file
    {
        echo "local customers = {$(printf '"%s",' "${customers[@]}")}"
        echo "local products = {$(printf '"%s",' "${products[@]}")}"
        cat <<'LUA'
local headers = {["Content-Type"] = "application/json", ["X-User-Role"] = "customer"}
function request()
    local lines, used = {}, {}
    for _ = 1, math.random(3) do
        local p = math.random(#products)
        while used[p] do p = p % #products + 1 end
        used[p] = true
        lines[#lines + 1] = string.format('{"product_id":"%s","quantity":%d}', products[p],
                                          math.random(3))
    end
    headers["X-User-Id"] = customers[math.random(#customers)]
    return wrk.format("POST", "/api/v1/orders", headers, '{"items":[' ..
        table.concat(lines, ",") .. '],"payment":{"card_number":"4242424242424242"}}')
end
LUA
    } >"$1"
}

# One checkout by the first customer (one unit of the first product), which must answer 201;
# sets first_order (its id).
bench_first_order() {
    local out
    out=$(curl -s -w '\n%{http_code}' -X POST "http://127.0.0.1:$order_port/api/v1/orders" \
        -H 'Content-Type: application/json' -H "X-User-Id: ${customers[0]}" -H 'X-User-Role: customer' \
        -d "{\"items\":[{\"product_id\":\"${products[0]}\",\"quantity\":1}],
             \"payment\":{\"card_number\":\"4242424242424242\"}}")
    [ "${out##*$'\n'}" = 201 ] || { echo "a first checkout was not answered 201: $out" >&2; exit 1; }
    first_order=$(sed -E '1!d; s/.*"id":"([^"]+)".*/\1/' <<<"$out")
}

# One line of a query's answer (columns separated by |) from a service's database: the SQLite
# FILE under the data directory, or the service's PostgreSQL database.
bench_sql() { # service sqlite-file query
    if [ "$backend" = postgres ]; then
        psql -qAt "${db_urls[$1]}" -c "$3"
    else
        /usr/bin/python3 -c 'import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5)
print("|".join("" if v is None else str(v) for v in c.execute(sys.argv[2]).fetchone()))' \
            "$work/data/$2" "$3"
    fi
}

# wrk once: prints "rps p99_ms p50_ms non2xx" on stdout and a line on stderr.
run_wrk() { # label url [lua script]
    local out rps p50 p99 non2xx
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency ${3:+-s "$3"} "$2")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    ms() { awk -v p="$1" '$1 == p {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0;
                                    else if (v ~ /s$/) v = v * 1000; print v}'; }
    p50=$(ms 50% <<<"$out")
    p99=$(ms 99% <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf '  %-28s %10.0f req/s   p50 %7.2f ms   p99 %7.2f ms%s\n' "$1" "$rps" "$p50" "$p99" \
        "${non2xx:+   NON-2XX: $non2xx}" >&2
    echo "$rps $p99 $p50 ${non2xx:-0}"
}

# Runs each "label|url|script" in turns for $rounds rounds (the first is the reference), then
# prints each one's median req/s, p50 and p99, its ratio to the reference and its non-2xx
# answers over all rounds. A script may define
# bench_before_run and bench_after_run (given the label) to watch one kind of run.
bench_rounds() {
    echo "wrk -t1 -c$connections -d${duration}s, $workers server threads/workers, backend $backend, $rounds rounds" >&2
    wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$nport/" >/dev/null # warm-up
    local i r spec
    for i in $(seq $#); do : >"$work/result.$i"; done
    for r in $(seq "$rounds"); do
        echo "round $r" >&2
        i=0
        for spec in "$@"; do
            i=$((i + 1))
            IFS='|' read -r label url script <<<"$spec"
            if [ "$(type -t bench_before_run)" = function ]; then bench_before_run "$label"; fi
            run_wrk "$label" "$url" "$script" >>"$work/result.$i"
            if [ "$(type -t bench_after_run)" = function ]; then bench_after_run "$label"; fi
        done
    done
    local ref
    ref=$(cut -d' ' -f1 "$work/result.1" | median)
    i=0
    for spec in "$@"; do
        i=$((i + 1))
        IFS='|' read -r label url script <<<"$spec"
        awk -v l="$label" -v rps="$(cut -d' ' -f1 "$work/result.$i" | median)" \
            -v p99="$(cut -d' ' -f2 "$work/result.$i" | median)" \
            -v p50="$(cut -d' ' -f3 "$work/result.$i" | median)" \
            -v bad="$(awk '{n += $4} END {print n + 0}' "$work/result.$i")" -v ref="$ref" \
            'BEGIN { printf "median %-28s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  ratio %.2f%s\n",
                     l, rps, p50, p99, rps / ref, bad ? "  NON-2XX: " bad : "" }'
    done
}

# One more wrk run against a target, reporting what each of the process's threads spent per
# request: CPU (user + system time from /proc, in µs) and bytes written to storage
# (write_bytes from /proc/PID/task/TID/io: what reaches the disk, checkpoints included).
thread_cpu_per_request() { # pid url [lua script]
    local snap_before snap_after out n
    snap() {
        for t in /proc/"$1"/task/*; do
            echo "$(cat "$t/comm") $(awk '{print $14 + $15}' "$t/stat") $(awk '/^write_bytes/ {print $2}' "$t/io")"
        done
    }
    snap_before=$(snap "$1")
    out=$(wrk -t1 -c"$connections" -d"${duration}s" ${3:+-s "$3"} "$2")
    snap_after=$(snap "$1")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    echo "CPU and bytes written per request by thread ($n requests, $(awk '/^Requests\/sec/ {print $2}' <<<"$out") req/s):"
    paste <(echo "$snap_before") <(echo "$snap_after") |
        awk -v n="$n" -v hz="$(getconf CLK_TCK)" '$1 == $4 {
            us = ($5 - $2) * 1e6 / hz / n; bytes = ($6 - $3) / n; total += us; written += bytes
            if (us > 0 || bytes > 0) printf "  %-14s %6.1f us %7.0f B\n", $1, us, bytes }
            END { printf "  %-14s %6.1f us %7.0f B\n", "all threads", total, written }'
}

# PostgreSQL's own ceiling for reads on the run's server: pgbench's select-only script with
# prepared statements (one primary-key SELECT per transaction), as many clients as wrk has
# connections. bench_pgbench_init makes its database (scale 1); sets pgbench_url.
bench_pgbench_init() {
    bench_pg_database bench_pgbench
    pgbench_url=$db_url
    pgbench -q -i -s 1 "$pgbench_url" >/dev/null 2>&1
}

# pgbench once: prints its tps on stdout and a line on stderr.
run_pgbench() {
    local tps
    tps=$(pgbench -n -S -M prepared -c "$connections" -j 2 -T "$duration" "$pgbench_url" 2>/dev/null |
        awk '/^tps/ {print $3; exit}')
    printf '  %-28s %10.0f tps\n' "pgbench -S -M prepared" "${tps:-0}" >&2
    echo "${tps:-0}"
}
