#!/usr/bin/env bash
# A private Docker engine for the deploy tests, never the system's:
#   tests/deploy/engine.sh start DIR   start dockerd with DIR/root as its data root (kept, so a
#                                      second run finds the images: the warm cache) and print
#                                      the DOCKER_HOST to use
#   tests/deploy/engine.sh stop DIR    stop it and remove what it left on the machine: the
#                                      iptables chains and FORWARD policy it set, the docker0
#                                      bridge and the compose networks' br-* links
# Needs root (dockerd, iptables). The vfs storage driver works on any filesystem, overlay not.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: engine.sh start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock="$dir/docker.sock"

# the compose networks' bridges present now, one a line
bridges() {
    ip -o link show | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep -E '^br-[0-9a-f]{12}$' || true
}

start() {
    if [ -e "$dir/docker.pid" ] && kill -0 "$(cat "$dir/docker.pid")" 2>/dev/null; then
        echo "unix://$sock"
        return 0
    fi
    if ip link show docker0 >/dev/null 2>&1; then
        echo "engine: a docker0 bridge exists already (another engine?); not starting" >&2
        exit 1
    fi
    # what stop restores: the rules, chains and FORWARD policy as they were, and which bridges
    # were there before dockerd added its own
    for table in filter nat; do iptables -t "$table" -S >"$dir/iptables.$table"; done
    iptables -S FORWARD | awk '$1 == "-P" { print $3 }' >"$dir/forward.policy"
    bridges >"$dir/links.before"
    mkdir -p "$dir/root" "$dir/exec"
    dockerd --storage-driver=vfs --data-root "$dir/root" --exec-root "$dir/exec" \
        --host "unix://$sock" --pidfile "$dir/docker.pid" >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 120); do
        if DOCKER_HOST="unix://$sock" docker version >/dev/null 2>&1; then
            echo "unix://$sock"
            return 0
        fi
        sleep 0.5
    done
    echo "engine: dockerd did not answer in 60 s; see $dir/dockerd.log" >&2
    exit 1
}

stop() {
    if [ -e "$dir/docker.pid" ]; then
        pid=$(cat "$dir/docker.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 1 120); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.5
            done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$dir/docker.pid"
    fi
    # the containerd dockerd started for itself, if it outlived it
    if [ -e "$dir/exec/containerd/containerd.pid" ]; then
        cpid=$(cat "$dir/exec/containerd/containerd.pid")
        kill "$cpid" 2>/dev/null || true
    fi
    # every rule dockerd added (the jumps to its chains, its MASQUERADE and FORWARD accepts),
    # then the chains it created, compared with what start saw
    for table in filter nat; do
        [ -e "$dir/iptables.$table" ] || continue
        iptables -t "$table" -S | grep -vxF -f "$dir/iptables.$table" | grep '^-A ' |
            while read -r rule; do
                # shellcheck disable=SC2086 # the rule's words are iptables arguments
                eval "iptables -t $table ${rule/-A/-D}" 2>/dev/null || true
            done
        iptables -t "$table" -S | grep -vxF -f "$dir/iptables.$table" | awk '$1 == "-N" { print $2 }' |
            while read -r chain; do
                iptables -t "$table" -F "$chain" 2>/dev/null || true
            done
        iptables -t "$table" -S | grep -vxF -f "$dir/iptables.$table" | awk '$1 == "-N" { print $2 }' |
            while read -r chain; do
                iptables -t "$table" -X "$chain" 2>/dev/null || true
            done
    done
    iptables -P FORWARD "$(cat "$dir/forward.policy" 2>/dev/null || echo ACCEPT)"
    ip link del docker0 2>/dev/null || true
    for link in $(bridges | grep -vxF -f "$dir/links.before" 2>/dev/null || bridges); do
        ip link del "$link" 2>/dev/null || true
    done
    # mounts dockerd may leave under its roots when killed
    grep -E " ($dir)/" /proc/mounts | awk '{ print $2 }' | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -f "$sock"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) echo "usage: engine.sh start|stop DIR" >&2; exit 2 ;;
esac
