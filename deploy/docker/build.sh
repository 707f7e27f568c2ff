#!/usr/bin/env bash
# Builds the images of the compose stack with the Docker engine of $DOCKER_HOST (or the
# default one), pulling nothing:
#   microshop-base:bookworm   Debian bookworm minbase, made with debootstrap when missing
#   microshop-build:latest    the compile stage (kept: the next build reuses its layers)
#   microshop:latest          the binary FROM scratch (deploy/docker/Dockerfile)
#   microshop-infra:latest    PostgreSQL, Redis, NATS, Prometheus (deploy/docker/infra)
# and prints their sizes. Needs root for debootstrap; the apt mirror must be reachable.
#   MS_DEBIAN_MIRROR   debootstrap's mirror (default http://deb.debian.org/debian)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
base=microshop-base:bookworm
mirror=${MS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the legacy builder's deprecation notice and step lines are noise here; errors still show
export DOCKER_BUILDKIT=0

if ! docker image inspect "$base" >/dev/null 2>&1; then
    echo "build: making $base with debootstrap (about a minute)" >&2
    rootfs=$(mktemp -d /var/tmp/microshop-rootfs.XXXXXX)
    # it becomes the image's /: mktemp's 0700 would shut out every user but root
    chmod 0755 "$rootfs"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 ||
        { cat "$rootfs.log" >&2; rm -f "$rootfs.log"; exit 1; }
    rm -f "$rootfs.log"
    # apt's caches of the bootstrap are not part of an image
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi

build() {
    local log
    log=$(mktemp)
    if ! docker build "$@" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

echo "build: microshop:latest" >&2
build -f "$here/Dockerfile" --target build -t microshop-build:latest "$root"
build -f "$here/Dockerfile" -t microshop:latest "$root"
echo "build: microshop-infra:latest" >&2
build -t microshop-infra:latest "$here/infra"
# the images these builds replaced
docker image prune -f >/dev/null

for img in microshop:latest microshop-infra:latest microshop-build:latest "$base"; do
    printf '%-26s %6.1f MB\n' "$img" \
        "$(docker image inspect -f '{{.Size}}' "$img" | awk '{ print $1 / 1000000 }')"
done
