#!/usr/bin/env bash
# CI: build the gateway image from deploy/Dockerfile and test the container for real
# (tests/container/): health, answers, user, read-only root, signals, crash exit code,
# healthcheck, compose up and down. No image registry is reachable here, so the base is a
# Debian made with debootstrap, uv comes from PyPI and Python from the base; the CUDA base
# and LMDeploy's GPU wheels are the production image's and are not built here.
#
# Docker's state (the base image, BuildKit's cache) is kept in $VLSERVE_DOCKER_ROOT between
# runs on the same machine; the daemon is this script's own, on its own socket.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${VLSERVE_DOCKER_ROOT:-/var/tmp/vlserve-docker}
BASE=localhost/vlserve-ci-base:bookworm
IMAGE=localhost/vlserve:ci
CA=/etc/ssl/certs/ca-certificates.crt
started=$(date +%s)

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap docker-compose
fi
DOCKER=/usr/bin/docker  # Debian's client: it has BuildKit (another `docker` on PATH may not)

mkdir -p "$ROOT"
RUN_DIR=$(mktemp -d)
export DOCKER_HOST=unix://$RUN_DIR/docker.sock
dockerd --host "$DOCKER_HOST" --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 \
    --data-root "$ROOT/data" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
    >"$RUN_DIR/dockerd.log" 2>&1 &
DOCKERD=$!
stop_dockerd() {
    "$DOCKER" ps -aq | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true
    kill "$DOCKERD" 2>/dev/null && wait "$DOCKERD" || true
    if mountpoint -q "$RUN_DIR/exec/netns/default"; then umount "$RUN_DIR/exec/netns/default"; fi
    rm -rf "$RUN_DIR"
}
trap stop_dockerd EXIT
for _ in $(seq 120); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
"$DOCKER" info >/dev/null || { cat "$RUN_DIR/dockerd.log"; exit 1; }

# The base: Debian bookworm (Python 3.11, as the image's PYTHON_VERSION), made once.
if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    # The mirror this machine's apt uses (deb.debian.org is what a plain Debian has).
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | awk '/^(URIs:|deb )/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) {print $i; exit}}' || true)
    rootfs="$RUN_DIR/rootfs"
    debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv bookworm "$rootfs" \
        "${mirror:-http://deb.debian.org/debian}" >"$RUN_DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$RUN_DIR/debootstrap.log"; exit 1; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . | "$DOCKER" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
fi
echo "container: base ready after $(( $(date +%s) - started )) s"

DOCKER_BUILDKIT=1 "$DOCKER" build --progress=plain --network host --secret "id=ca,src=$CA" \
    --build-arg BASE_IMAGE="$BASE" --build-arg UV_SOURCE=pypi --build-arg PYTHON_DOWNLOADS=never \
    --build-arg INSTALL_ENGINE=false -f deploy/Dockerfile -t "$IMAGE" .
echo "container: image built after $(( $(date +%s) - started )) s"

VLSERVE_TEST_IMAGE=$IMAGE VLSERVE_TEST_DOCKER=$DOCKER .venv/bin/python -m pytest -v tests/container
echo "container: tests passed after $(( $(date +%s) - started )) s"
