#!/usr/bin/env bash
# Installs the Debian packages microshop needs, only those missing. Idempotent and quiet.
#   scripts/bootstrap.sh          build and run dependencies
#   scripts/bootstrap.sh test     plus what the test suite starts (PostgreSQL, pytest, ...)
#   scripts/bootstrap.sh bench    plus wrk and nginx (the benchmark reference)
#   scripts/bootstrap.sh deploy   plus Docker, docker-compose, debootstrap (tests/deploy)
#   scripts/bootstrap.sh --list [SET...]   print the packages instead of installing them
# The build set is everything `make run` needs; `make test` checks that (check_run_deps.py).
set -euo pipefail

build_pkgs=(gcc make cmake pkg-config libuv1-dev libhttp-parser-dev libjansson-dev
    libsqlite3-dev libpq-dev libargon2-dev libnats-dev libssl-dev libhiredis-dev libjs-chart.js)
test_pkgs=(libcmocka-dev postgresql python3 python3-pytest python3-pytest-xdist python3-requests
    python3-psycopg2 python3-yaml prometheus sqlite3 curl procps clang-format clang-tidy cppcheck
    nats-server redis-server chromium python3-websocket kubernetes-client yamllint shellcheck gcovr)
bench_pkgs=(wrk nginx-light curl procps postgresql python3)
deploy_pkgs=(docker.io docker-compose debootstrap iptables python3 python3-pytest python3-requests
    python3-yaml)

want=("${build_pkgs[@]}")
list=0
for extra in "$@"; do
    case "$extra" in
    --list) list=1 ;;
    test) want+=("${test_pkgs[@]}") ;;
    bench) want+=("${bench_pkgs[@]}") ;;
    deploy) want+=("${deploy_pkgs[@]}") ;;
    *) echo "bootstrap: unknown set '$extra' (use: test, bench, deploy)" >&2; exit 2 ;;
    esac
done

if [ "$list" = 1 ]; then
    printf '%s\n' "${want[@]}" | sort -u
    exit 0
fi

missing=()
for p in "${want[@]}"; do
    # Any kubectl renders the manifests; Debian's would collide on /usr/bin/kubectl with another
    # package's (the Google Cloud SDK's kubectl), so one already there is taken as it is.
    [ "$p" = kubernetes-client ] && command -v kubectl >/dev/null && continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
        echo "bootstrap: missing packages (${missing[*]}) and not root; install them and retry" >&2
        exit 1
    fi
else SUDO=; fi

echo "bootstrap: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
