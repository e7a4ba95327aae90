#!/usr/bin/env bash
# Makes sure `sam local` can run on this machine: a Docker engine, and the Lambda base image SAM
# asks for. No container registry is reachable, so the image is made locally: a minimal Debian
# root file system (debootstrap, from the apt mirror this machine is configured with) imported
# under the name SAM expects. SAM adds its Runtime Interface Emulator on top itself.
#
# It is a stand-in for Amazon Linux 2023: it has /bin/sh, mv, chmod and a glibc, which is all
# SAM's image build and a `provided.al2023` bootstrap need. Its glibc is newer than AL2023's
# 2.34, so it cannot show a binary that needs too new a glibc: tools/sam-local/glibc-check.sh does.
set -euo pipefail

IMAGE="${SAM_BASE_IMAGE:-public.ecr.aws/lambda/provided:al2023-x86_64}"
STATE="${SAM_LOCAL_STATE:-$HOME/.cache/mpesa-express/docker}"
mkdir -p "$STATE"

say() { echo "==> $*" >&2; }

if ! command -v dockerd >/dev/null 2>&1; then
    say "installing Docker (Debian's docker.io)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io containerd runc iptables >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
    # A dockerd killed without its shutdown leaves its pid file behind, and a new one refuses
    # to start while it names a live process; a stale one is removed.
    pidfile=/var/run/docker.pid
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        rm -f "$pidfile"
    fi
    say "starting dockerd (log: $STATE/dockerd.log)"
    nohup dockerd >"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 1 300); do
        docker info >/dev/null 2>&1 && break
        sleep 0.1
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see $STATE/dockerd.log" >&2; exit 1; }
fi

# Where a registry answers, SAM_BASE_IMAGE_PULL=1 fetches the real image instead.
if [ "${SAM_BASE_IMAGE_PULL:-0}" = 1 ] && ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    docker pull "$IMAGE" || say "could not pull $IMAGE; making a local stand-in"
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    fi
    # The first Debian mirror apt is configured with (deb822 sources or the classic list).
    mirror=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
                 | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$mirror" ]; then
        mirror=$(grep -hoE '^deb[[:space:]]+[^[:space:]]+' /etc/apt/sources.list 2>/dev/null \
                     | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    [ -n "$mirror" ] || { echo "no Debian mirror found in apt's sources" >&2; exit 1; }
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    say "making a stand-in for $IMAGE: Debian bookworm (debootstrap minbase, about a minute)"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >"$STATE/debootstrap.log" 2>&1 \
        || { echo "debootstrap failed; see $STATE/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -c . | docker import - "$IMAGE" >/dev/null
fi
say "Docker is up (dockerd keeps running); base image $IMAGE is present"
