#!/usr/bin/env bash
# The deploy tests: the images and the compose stack on a private Docker engine.
#   tests/deploy/run.sh RESULTS_DIR
# Starts dockerd (tests/deploy/engine.sh) with its data under $MS_DEPLOY_DIR (default
# /var/tmp/microshop-deploy; kept between runs, so the second run reuses the base image and
# the build layers), builds the images (deploy/docker/build.sh), runs tests/deploy with pytest
# (JUnit XML in RESULTS_DIR/deploy.xml, the stack's seconds to healthy in
# RESULTS_DIR/deploy-timings.json) and ALWAYS tears down what it started: the compose
# projects, dockerd, its iptables rules and bridges, also on failure or Ctrl-C.
# Installs nothing: `bash scripts/bootstrap.sh deploy` does (docker.io, docker-compose,
# debootstrap, iptables). Needs root. Extra arguments go to pytest (-k, -x, ...).
set -euo pipefail

out=${1:?usage: tests/deploy/run.sh RESULTS_DIR [pytest args]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
state=${MS_DEPLOY_DIR:-/var/tmp/microshop-deploy}
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$(date +%s)

for tool in dockerd docker docker-compose debootstrap iptables; do
    command -v "$tool" >/dev/null || {
        echo "deploy: $tool is missing; run: bash scripts/bootstrap.sh deploy" >&2
        exit 2
    }
done
[ "$(id -u)" -eq 0 ] || { echo "deploy: needs root (dockerd, iptables)" >&2; exit 2; }

export MS_DEPLOY_PROJECT="msdeploy$$"
export MS_DEPLOY_RESULTS="$out"
compose=(docker-compose -p "$MS_DEPLOY_PROJECT" -f "$root/deploy/compose/docker-compose.yml"
    -f "$root/deploy/compose/docker-compose.replicas.yml")

teardown() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
        "${compose[@]}" down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
        # containers the tests made outside compose (docker create in test_image)
        docker ps -aq | xargs -r docker rm -f >/dev/null 2>&1 || true
    fi
    bash "$root/tests/deploy/engine.sh" stop "$state" || true
    echo "deploy: done in $(($(date +%s) - started)) s (rc $rc)" >&2
    exit "$rc"
}
# pytest runs in the background so that a signal reaches these traps at once (bash runs a
# trap only after the foreground command ends); a background job ignores SIGINT, so it is
# stopped with SIGTERM, and teardown removes whatever it left
child=
stop() {
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
    exit "$1"
}
trap teardown EXIT
trap 'stop 130' INT
trap 'stop 143' TERM

DOCKER_HOST=$(bash "$root/tests/deploy/engine.sh" start "$state")
export DOCKER_HOST
b0=$(date +%s)
bash "$root/deploy/docker/build.sh"
echo "deploy: images built in $(($(date +%s) - b0)) s" >&2

# the stack's published ports: free ones, so a shop already on 8080 does not matter
read -r MICROSHOP_PORT MICROSHOP_PROMETHEUS_PORT < <(/usr/bin/python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export MICROSHOP_PORT MICROSHOP_PROMETHEUS_PORT

cd "$root"
/usr/bin/python3 -m pytest tests/deploy -v -p no:cacheprovider -o junit_family=xunit1 \
    --junitxml="$out/deploy.xml" "$@" &
child=$!
wait "$child"
