#!/usr/bin/env bash
# build-chroot.sh: builds, once, the Debian 13 chroot with podman 5 that the
# podman 5 tests run (settings: common.sh). A ready chroot is left alone unless
# PODMAN5_REBUILD=1. Safe to run concurrently: builders serialise on an
# exclusive flock of $PODMAN5_CACHE/lock, and a rebuild waits until no test
# session holds the chroot (sessions hold a shared lock). Needs root,
# debootstrap (scripts/install-system-deps.sh) and the Debian mirror.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

[[ $(id -u) == 0 ]] || { echo "build-chroot.sh: must run as root" >&2; exit 2; }
# All the work happens in a private mount namespace: the /proc, /sys and /dev
# mounts apt needs vanish with it, even if this script is killed.
if [[ -z ${P5_BUILD_IN_NS:-} ]]; then
  exec env P5_BUILD_IN_NS=1 unshare --mount --propagation private "$0" "$@"
fi
mkdir -p "$P5_CACHE"
exec 9>>"$P5_LOCK"

ready() { [[ -f $P5_READY && -d $P5_ROOTFS && ${PODMAN5_REBUILD:-0} != 1 ]]; }

# The common case: a finished chroot, checked under a shared lock so that it
# never waits for another run's session.
flock -s 9
if ready; then echo "podman 5 chroot ready: $P5_ROOTFS ($(head -1 "$P5_READY"))"; exit 0; fi
flock -u 9

command -v debootstrap >/dev/null || {
  echo "debootstrap is missing: install it with scripts/install-system-deps.sh (apt-get install debootstrap)" >&2; exit 1; }
[[ -f /usr/share/debootstrap/scripts/$P5_SUITE ]] || {
  echo "this debootstrap does not know Debian $P5_SUITE: update it (apt-get install debootstrap)" >&2; exit 1; }

# A rebuild waits here for the sessions of other runs to end (up to 15 min).
flock -x -w 900 9 || { echo "build-chroot.sh: the chroot stayed in use for 15 min" >&2; exit 1; }
if ready; then echo "podman 5 chroot ready: $P5_ROOTFS (built by another run)"; exit 0; fi

LOG=$P5_CACHE/build.log
tmp=$P5_CACHE/rootfs.building
t0=$SECONDS
rm -f "$P5_READY"
rm -rf --one-file-system "$tmp"
echo "building the podman 5 chroot: debootstrap --variant=minbase $P5_SUITE from $P5_MIRROR (log $LOG)"
fail() { echo "build-chroot.sh: $1 failed; last lines of $LOG:" >&2; tail -25 "$LOG" >&2; exit 1; }
debootstrap --variant=minbase "$P5_SUITE" "$tmp" "$P5_MIRROR" >"$LOG" 2>&1 || fail "debootstrap of Debian $P5_SUITE"
t1=$SECONDS

# No service starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$tmp/etc/resolv.conf"
mount -t proc proc "$tmp/proc"
mount --rbind /sys "$tmp/sys"
mount --rbind /dev "$tmp/dev"
p5_in_chroot "$tmp" apt-get update >>"$LOG" 2>&1 || fail "apt-get update in the chroot"
p5_in_chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${P5_PACKAGES[@]}" >>"$LOG" 2>&1 \
  || fail "apt-get install ${P5_PACKAGES[*]}"
p5_in_chroot "$tmp" apt-get clean
version=$(p5_in_chroot "$tmp" podman --version)
# podman's user agent is containers/<c/image version>, which tells its registry
# requests apart from those of the host's podman 4 and of the store.
cimage=$(p5_in_chroot "$tmp" dpkg-query -W -f='${Built-Using}' podman | tr ',' '\n' \
  | sed -n 's/.*golang-github-containers-image (= \([0-9.]*\).*/\1/p')
umount -R "$tmp/dev" "$tmp/sys" "$tmp/proc"

rm -rf --one-file-system "$P5_ROOTFS"
mv "$tmp" "$P5_ROOTFS"
{
  echo "$version, c/image ${cimage:-unknown}; built $(date -u +%FT%TZ) in $((SECONDS - t0)) s (debootstrap $((t1 - t0)) s)"
  echo "c-image=${cimage:-}"
} > "$P5_READY"
echo "podman 5 chroot ready: $P5_ROOTFS ($(head -1 "$P5_READY"))"
