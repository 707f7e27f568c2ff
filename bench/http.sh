#!/usr/bin/env bash
# HTTP ceiling benchmark: GET /api/v1/users/{id} on the user service against nginx
# `return 200` with the same worker count, in one run, on loopback; prints the ratio.
#
#   bench/http.sh [--duration S] [--connections N] [--threads N] [--rounds N]
#                 [--backend sqlite|postgres]
#
# The targets are measured in turns (nginx, users, health, nginx, ...) for --rounds rounds and
# the medians are compared, so drift of a shared machine hits both sides alike.
# Needs wrk and nginx (scripts/bootstrap.sh bench) and a built binary (make build).
set -euo pipefail
cd "$(dirname "$0")/.."

duration=10
connections=64
workers=$(nproc)
backend=sqlite
rounds=3
while [ $# -gt 0 ]; do
    case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --threads) workers=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--duration S] [--connections N] [--threads N] [--rounds N] [--backend sqlite|postgres]" >&2; exit 2 ;;
    esac
done

bin=${MS_BINARY:-build/microshop}
[ -x "$bin" ] || { echo "no $bin: run 'make build' first" >&2; exit 1; }
command -v wrk >/dev/null && command -v nginx >/dev/null ||
    { echo "wrk and nginx are needed: bash scripts/bootstrap.sh bench" >&2; exit 1; }

work=$(mktemp -d /tmp/microshop-bench.XXXXXX)
pids=()
pgdir=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "$pgdir" ] && bash tests/lib/pg.sh stop "$pgdir" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/${2:-}" && return 0; sleep 0.1; done; return 1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# --- nginx `return 200`, same number of workers
nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
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
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

# --- the user service
uport=$(free_port)
env_db=()
if [ "$backend" = postgres ]; then
    pgdir=$(mktemp -d /tmp/microshop-bench-pg.XXXXXX)
    pgurl=$(bash tests/lib/pg.sh start "$pgdir")
    env_db=(DATABASE_URL="${pgurl%/postgres}/postgres")
fi
env "${env_db[@]}" "$bin" serve user --listen "127.0.0.1:$uport" --data "$work/data" \
    --threads "$workers" --log-level warn &
upid=$!
pids+=($upid)
wait_port "$nport" || { echo "nginx did not start" >&2; exit 1; }
wait_port "$uport" health || { echo "microshop did not start" >&2; exit 1; }
sleep 0.5
idle_rss=$(rss_kb "$upid")

id=$(curl -s -X POST "http://127.0.0.1:$uport/api/v1/users" -H 'Content-Type: application/json' \
    -d '{"email":"bench@example.com","name":"Bench","password":"bench-password-1"}' |
    sed -E 's/.*"id":"([^"]+)".*/\1/')
cat >"$work/user.lua" <<EOF
wrk.headers["X-User-Id"] = "$id"
wrk.headers["X-User-Role"] = "customer"
EOF
curl -sf "http://127.0.0.1:$uport/api/v1/users/$id" -H "X-User-Id: $id" -H 'X-User-Role: customer' >/dev/null ||
    { echo "GET /api/v1/users/{id} does not answer 200" >&2; exit 1; }

run_wrk() { # label url [script] -> "rps p99_ms" on stdout, a line on stderr
    local out rps p99 non2xx
    out=$(wrk -t1 -c"$connections" -d"${duration}s" --latency ${3:+-s "$3"} "$2")
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0;
                            else if (v ~ /s$/) v = v * 1000; print v}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    printf '  %-28s %10.0f req/s   p99 %6.2f ms%s\n' "$1" "$rps" "$p99" \
        "${non2xx:+   NON-2XX: $non2xx}" >&2
    echo "$rps $p99"
}

median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

echo "wrk -t1 -c$connections -d${duration}s, $workers server threads/workers, backend $backend, $rounds rounds" >&2
wrk -t1 -c"$connections" -d2s "http://127.0.0.1:$nport/" >/dev/null # warm-up
: >"$work/nginx.txt"
: >"$work/user.txt"
: >"$work/health.txt"
for r in $(seq "$rounds"); do
    echo "round $r" >&2
    run_wrk "nginx return 200" "http://127.0.0.1:$nport/" >>"$work/nginx.txt"
    run_wrk "GET /api/v1/users/{id}" "http://127.0.0.1:$uport/api/v1/users/$id" "$work/user.lua" >>"$work/user.txt"
    run_wrk "GET /health" "http://127.0.0.1:$uport/health" >>"$work/health.txt"
done
loaded_rss=$(rss_kb "$upid")

n_rps=$(cut -d' ' -f1 "$work/nginx.txt" | median)
u_rps=$(cut -d' ' -f1 "$work/user.txt" | median)
h_rps=$(cut -d' ' -f1 "$work/health.txt" | median)
n_p99=$(cut -d' ' -f2 "$work/nginx.txt" | median)
u_p99=$(cut -d' ' -f2 "$work/user.txt" | median)
awk -v n="$n_rps" -v u="$u_rps" -v h="$h_rps" -v np="$n_p99" -v up="$u_p99" \
    -v i="$idle_rss" -v l="$loaded_rss" 'BEGIN {
    printf "median nginx return 200:        %8.0f req/s  p99 %.2f ms\n", n, np
    printf "median GET /api/v1/users/{id}:  %8.0f req/s  p99 %.2f ms (goal <= 2 ms)\n", u, up
    printf "ratio GET /api/v1/users/{id} / nginx: %.2f   (goal >= 0.70)\n", u / n
    printf "ratio GET /health / nginx:            %.2f\n", h / n
    printf "user service RSS: idle %.1f MB (goal <= 8), after load %.1f MB\n", i / 1024, l / 1024
}'
