# bench/lib.sh — what every HTTP benchmark shares (sourced, not run): options, a work dir
# cleaned on exit, nginx `return 200` as the reference, a microshop target on SQLite or a
# throwaway PostgreSQL, wrk runs in turns over rounds, medians and ratios to nginx.

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
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$pgdir" ] && bash tests/lib/pg.sh stop "$pgdir" >/dev/null 2>&1
    rm -rf "$work"
}

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/${2:-}" && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# nginx `return 200` with the same number of workers; sets nport.
bench_start_nginx() {
    nport=$(free_port)
    mkdir -p "$work/nginx"
    cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes $workers;
daemon off;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$nport reuseport;
        location / { return 200 '{"status":"ok"}'; }
    }
}
NGINX
    nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    pids+=($!)
    wait_port "$nport" || { echo "nginx did not start" >&2; exit 1; }
}

# microshop serve TARGET on a free port; sets sport and spid.
bench_start_service() {
    sport=$(free_port)
    local env_db=()
    if [ "$backend" = postgres ]; then
        pgdir=$(mktemp -d /tmp/microshop-bench-pg.XXXXXX)
        env_db=(DATABASE_URL="$(bash tests/lib/pg.sh start "$pgdir")")
    fi
    env "${env_db[@]}" "$bin" serve "$1" --listen "127.0.0.1:$sport" --data "$work/data" \
        --threads "$workers" --log-level warn &
    spid=$!
    pids+=($spid)
    wait_port "$sport" health || { echo "microshop $1 did not start" >&2; exit 1; }
}

# The POST /api/v1/orders load (one order of one line, as a customer) into FILE; sets post_user.
bench_post_lua() { # file
    post_user=0190c2a4-0000-7000-8000-00000000b001
    cat >"$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-Id"] = "$post_user"
wrk.headers["X-User-Role"] = "customer"
wrk.body = '{"items":[{"product_id":"11111111-1111-4111-8111-111111111111","quantity":2,"unit_price_cents":1999}],"currency":"EUR"}'
LUA
}

# wrk once: prints "rps p99_ms" on stdout and a line on stderr.
run_wrk() { # label url [lua script]
    local out rps p99 non2xx
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency ${3:+-s "$3"} "$2")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0;
                            else if (v ~ /s$/) v = v * 1000; print v}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf '  %-28s %10.0f req/s   p99 %7.2f ms%s\n' "$1" "$rps" "$p99" \
        "${non2xx:+   NON-2XX: $non2xx}" >&2
    echo "$rps $p99"
}

# Runs each "label|url|script" in turns for $rounds rounds (the first is the reference), then
# prints each one's median req/s and p99 and its ratio to the reference. A script may define
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
            -v p99="$(cut -d' ' -f2 "$work/result.$i" | median)" -v ref="$ref" \
            'BEGIN { printf "median %-28s %9.0f req/s  p99 %6.2f ms  ratio %.2f\n", l, rps, p99, rps / ref }'
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
