#!/usr/bin/env bash
# Build and run Conveyor's images offline: a private dockerd, a Debian base from mmdebstrap, host-built wheels.
#
#   deployments/docker/build.sh start     start dockerd (root) with its state in .conveyor/docker
#   deployments/docker/build.sh wheels    wheels of every pinned dependency into deployments/docker/wheels
#   deployments/docker/build.sh base      conveyor-base:bookworm (mmdebstrap minbase + python3, docker import)
#   deployments/docker/build.sh images    conveyor-flows and conveyor-api from the Dockerfile on that base
#   deployments/docker/build.sh postgres  conveyor-postgres:15-bookworm (Debian's PostgreSQL; stands in for the
#                                         official postgres image that compose names, which cannot be pulled here)
#   deployments/docker/build.sh prune     drop the build cache and the wheels (the images hold what they need)
#   deployments/docker/build.sh stop      stop that dockerd
#   deployments/docker/build.sh clean     stop, then remove the daemon's state (images, cache) and the wheels
#   deployments/docker/build.sh all       start, wheels, base, images, prune, postgres (the daemon is left running)
# Clients use DOCKER_HOST=unix://$STATE/docker.sock (printed by `start`).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE=${CONVEYOR_DOCKER_STATE:-$REPO/.conveyor/docker}
DOCKER=/usr/bin/docker  # Debian's client with buildx; another `docker` on PATH may lack it
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/pyproject.toml")
BASE_IMAGE=conveyor-base:bookworm
POSTGRES_IMAGE=conveyor-postgres:15-bookworm
WHEELS=$REPO/deployments/docker/wheels
export DOCKER_HOST=unix://$STATE/docker.sock

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
free_disk() { df -h --output=avail "$(dirname "$STATE")" | tail -1 | tr -d ' '; }

# `all` took up to 9.2 GB more disk than before it started (measured, docs/operations.md): refuse to start
# without that and some margin, instead of failing halfway through an image with ENOSPC.
NEEDED_GB=12
check_disk() {
  local free_kb
  free_kb=$(df --output=avail -k "$(dirname "$STATE")" | tail -1)
  ((free_kb >= NEEDED_GB * 1024 * 1024)) || {
    echo "building the images needs about $NEEDED_GB GB free on $(dirname "$STATE"); $(free_disk) free" >&2
    exit 1
  }
}

start() {
  mkdir -p "$STATE"
  if $DOCKER info >/dev/null 2>&1; then log "dockerd already answers on $DOCKER_HOST"; return; fi
  [ "$(id -u)" = 0 ] || { echo "dockerd needs root (run this as root)" >&2; exit 1; }
  dockerd --data-root "$STATE/data" --exec-root "$STATE/exec" -H "$DOCKER_HOST" \
    --pidfile "$STATE/dockerd.pid" >"$STATE/dockerd.log" 2>&1 &
  for _ in $(seq 60); do
    $DOCKER info >/dev/null 2>&1 && { log "dockerd up: export DOCKER_HOST=$DOCKER_HOST"; return; }
    sleep 1
  done
  tail -20 "$STATE/dockerd.log" >&2; echo "dockerd did not start; log: $STATE/dockerd.log" >&2; exit 1
}

stop() {
  local pid
  pid=$(cat "$STATE/dockerd.pid" 2>/dev/null) || { log "no dockerd pid file"; return; }
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || { log "dockerd stopped"; return; }; sleep 1; done
  echo "dockerd ($pid) still running after 30 s" >&2; exit 1
}

clean() {
  stop
  rm -rf "$STATE"  # images and daemon state (~5 GB)
  find "$WHEELS" -name '*.whl' -delete
  log "removed $STATE and the wheels"
}

wheels() {
  # Same pins as the venv (constraints.txt); llama-cpp-python comes from pip's cache of the local build.
  # async-timeout: redis needs it on bookworm's Python 3.11.2 (< 3.11.3), not on the host's.
  log "wheels -> $WHEELS"
  "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELS" -c "$REPO/constraints.txt" \
    torch=="$(sed -n 's/.*"torch==\([^"]*\)".*/\1/p' "$REPO/pyproject.toml")" pip setuptools wheel async-timeout "$REPO" \
    2> >(grep -v "is ignored: it is neither" >&2)
  rm -f "$WHEELS"/conveyor-*.whl  # the image installs the source tree itself
  rm -rf "$REPO/build" "$REPO"/*.egg-info  # setuptools builds in the tree
}

base() {
  if $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "$BASE_IMAGE exists"; return; fi
  log "mmdebstrap bookworm -> $BASE_IMAGE"
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates,libgomp1,bubblewrap \
    bookworm "$STATE/base.tar"
  $DOCKER import "$STATE/base.tar" "$BASE_IMAGE"
  rm -f "$STATE/base.tar"
}

images() {
  ls "$WHEELS"/torch-*.whl >/dev/null 2>&1 || wheels
  for target in flows api; do
    log "building conveyor-$target:$VERSION ($(free_disk) free on disk)"
    DOCKER_BUILDKIT=1 $DOCKER build --quiet -f "$REPO/deployments/docker/Dockerfile" \
      --build-arg BASE="$BASE_IMAGE" --target "$target" -t "conveyor-$target:$VERSION" "$REPO" >/dev/null
  done
  $DOCKER image ls --filter reference='conveyor-*' >&2
}

prune() {
  $DOCKER builder prune --all --force >/dev/null
  find "$WHEELS" -name '*.whl' -delete
  log "build cache and wheels removed ($(free_disk) free on disk)"
}

postgres() {
  if $DOCKER image inspect "$POSTGRES_IMAGE" >/dev/null 2>&1; then log "$POSTGRES_IMAGE exists"; return; fi
  log "mmdebstrap bookworm + postgresql-15 -> $POSTGRES_IMAGE"
  # No cluster from the package's postinst: the entrypoint creates one in the volume on first start.
  mmdebstrap --quiet --variant=minbase --include=postgresql-15 \
    --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d"' \
    --essential-hook='echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/conveyor.conf"' \
    bookworm "$STATE/postgres.tar"
  $DOCKER import "$STATE/postgres.tar" "$POSTGRES_IMAGE-rootfs" >/dev/null
  rm -f "$STATE/postgres.tar"
  local context="$STATE/postgres-context"
  mkdir -p "$context"
  cp "$REPO/deployments/docker/postgres-entrypoint.sh" "$context/"
  DOCKER_BUILDKIT=1 $DOCKER build --quiet -f "$REPO/deployments/docker/postgres.Dockerfile" \
    --build-arg ROOTFS="$POSTGRES_IMAGE-rootfs" -t "$POSTGRES_IMAGE" "$context" >/dev/null
  $DOCKER image rm "$POSTGRES_IMAGE-rootfs" >/dev/null
}

case "${1:-all}" in
  start) start ;;
  stop) stop ;;
  clean) clean ;;
  wheels) wheels ;;
  base) base ;;
  images) images ;;
  prune) prune ;;
  postgres) postgres ;;
  all) check_disk; start; wheels; base; images; prune; postgres ;;
  *) echo "usage: $0 [start|wheels|base|images|prune|postgres|stop|clean|all]" >&2; exit 2 ;;
esac
