#!/usr/bin/env bash
# Builds the lab's images without a registry:
#   1. wirelab-base: debootstrap (minbase) of the Debian mirror apt already uses, then
#      `docker import` (about 30 s; skipped when the image exists, unless --rebuild-base);
#   2. wirelab-lab: FROM wirelab-base with the host's release binary (stripped) and the entry
#      scripts copied in (about 2 s). The binary is built first if it is missing.
# Needs root (debootstrap) and a running Docker engine. Usage: lab/build-image.sh [--rebuild-base]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
base=${WIRELAB_BASE_IMAGE:-wirelab-base:bookworm}
image=${WIRELAB_LAB_IMAGE:-wirelab-lab:latest}
suite=${WIRELAB_SUITE:-bookworm}
rebuild=0
[ "${1:-}" = --rebuild-base ] && rebuild=1

command -v docker >/dev/null || { echo "docker is not installed (apt-get install docker.io docker-compose debootstrap)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "the Docker engine does not answer (is dockerd running? are you root or in the docker group?)" >&2; exit 1; }

if [ $rebuild = 1 ] || ! docker image inspect "$base" >/dev/null 2>&1; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed" >&2; exit 1; }
    [ "$(id -u)" = 0 ] || { echo "debootstrap needs root" >&2; exit 1; }
    # apt's own mirror: deb822 sources first, then the classic list, then deb.debian.org.
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    rootfs=$(mktemp -d /tmp/wirelab-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "debootstrap $suite from $mirror ..." >&2
    debootstrap --variant=minbase --include=iproute2,ethtool,iputils-ping,procps \
        "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages \
        "$rootfs"/usr/share/locale "$rootfs"/usr/share/doc "$rootfs"/usr/share/man
    tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
    echo "base image $base imported" >&2
fi

target=${CARGO_TARGET_DIR:-target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
bin=${WIRELAB_BIN:-$target/release/wirelab}
case "$bin" in /*) ;; *) bin=$root/$bin ;; esac
if [ ! -x "$bin" ]; then
    echo "building the release binary ($bin is missing) ..." >&2
    (cd "$root" && cargo build --release --locked -p wirelab --bin wirelab)
fi
ctx=$(mktemp -d /tmp/wirelab-ctx.XXXXXX)
trap 'rm -rf "$ctx" ${rootfs:+"$rootfs"}' EXIT
cp "$bin" "$ctx/wirelab"
strip "$ctx/wirelab" 2>/dev/null || true
cp -r "$here"/Dockerfile "$here"/*.sh "$here"/scenarios "$ctx/"
docker build -q --build-arg BASE="$base" -t "$image" "$ctx" 2>/dev/null >/dev/null \
    || docker build --build-arg BASE="$base" -t "$image" "$ctx"
echo "lab image $image built from $bin" >&2

# A container may only pick a congestion control the host lists in
# net.ipv4.tcp_allowed_congestion_control (by default reno and the host's default); the lab's
# endpoints ask for ${CC:-cubic}, as the in-process link does. Allow it (until reboot).
cc=${CC:-cubic}
allowed=$(cat /proc/sys/net/ipv4/tcp_allowed_congestion_control 2>/dev/null || true)
case " $allowed " in
    *" $cc "*) ;;
    *) if [ "$(id -u)" = 0 ] && echo "$allowed $cc" > /proc/sys/net/ipv4/tcp_allowed_congestion_control 2>/dev/null; then
           echo "added $cc to net.ipv4.tcp_allowed_congestion_control (was: $allowed)" >&2
       else
           echo "note: $cc is not in net.ipv4.tcp_allowed_congestion_control ($allowed): as root run" >&2
           echo "  sysctl -w net.ipv4.tcp_allowed_congestion_control=\"$allowed $cc\"  (or set CC=)" >&2
       fi ;;
esac
