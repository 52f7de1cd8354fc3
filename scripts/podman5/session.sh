#!/usr/bin/env bash
# session.sh: holds a private mount namespace in which the cached podman 5
# chroot (build-chroot.sh) is ready to run podman against a store mounted on
# the host. It prints "ready <pid>" once the mounts are in place, then waits
# until its stdin reaches EOF (the test process closed it or died); the
# namespace, and every mount in it, goes away with the session. Commands run
# inside with
#
#   nsenter -t <pid> -m -- chroot <rootfs> /usr/bin/env -i PATH=... podman ...
#
# Usage: session.sh RUN_DIR STORE_MNT [STORE_ROOT PROJECT_DIR NODE]
#
#   RUN_DIR      this run's writable state, prepared by the caller, and removed
#                when the session ends if it holds the file .podman5-run:
#                  etc-containers/  -> /etc/containers (storage.conf, containers.conf,
#                                      registries.conf, policy.json)
#                  containers/      -> /var/lib/containers (the graphroot)
#                  vartmp/          -> /var/tmp (podman's big temporary files; save output)
#                  bin/             -> /opt/p5/bin, read-only (the auth helper wrapper)
#   STORE_MNT    the store's FUSE mount on the host -> /var/lib/estargz-store/store
#   STORE_ROOT   the store's --root (store.sock) -> /var/lib/estargz-store/root, read-only
#   PROJECT_DIR  a built checkout (dist/src/cli/auth-helper.js) -> /opt/estargz-store, read-only
#   NODE         the host's node binary -> /usr/local/bin/node, read-only (trixie's
#                glibc and libstdc++ run it as it is)
#   The last three are for podman's additional-layer-store-auth-helper.
#
# The cached rootfs itself is mounted read-only: runs never change it, and
# several runs may share it at once. The session holds a shared flock on the
# cache's lock, so a rebuild (PODMAN5_REBUILD=1) waits for it to end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/common.sh"

(($# == 2 || $# == 5)) || { sed -n '2,/^set /p' "$0" | sed 's/^# \{0,1\}//;$d' >&2; exit 2; }
RUN_DIR=$1 STORE_MNT=$2 STORE_ROOT=${3:-} PROJECT=${4:-} NODE_BIN=${5:-}
[[ $(id -u) == 0 ]] || { echo "session.sh: must run as root" >&2; exit 2; }

if [[ -z ${P5_SESSION_IN_NS:-} ]]; then
  exec env P5_SESSION_IN_NS=1 unshare --mount --propagation private "$0" "$@"
fi

exec 9<"$P5_LOCK" || { echo "session.sh: no podman 5 chroot in $P5_CACHE: run scripts/podman5/build-chroot.sh" >&2; exit 1; }
flock -s -w 900 9
[[ -f $P5_READY ]] || { echo "session.sh: the podman 5 chroot in $P5_CACHE is not ready: run scripts/podman5/build-chroot.sh" >&2; exit 1; }
mountpoint -q "$STORE_MNT" || { echo "session.sh: nothing is mounted at $STORE_MNT" >&2; exit 1; }

R=$P5_ROOTFS
# Mount points, made in the cache before the rootfs turns read-only (idempotent).
mkdir -p "$R/var/lib/containers" "$R/var/lib/estargz-store/store" "$R/var/lib/estargz-store/root" \
  "$R/opt/estargz-store" "$R/opt/p5/bin"
[[ -e $R/usr/local/bin/node ]] || : > "$R/usr/local/bin/node"

# The chroot's / must be a mount point: runc makes "/" rslave and c/storage's
# chrootarchive remounts it private, and both fail with EINVAL on a plain
# directory.
mount --bind "$R" "$R"
mount -o remount,bind,ro "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"      # brings the cgroup v1 hierarchies along
mount --rbind /dev "$R/dev"      # /dev/fuse, /dev/pts, /dev/shm, ...
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"   # runroot; podman login's auth file
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/tmp"
mount --bind "$RUN_DIR/etc-containers" "$R/etc/containers"
mount --bind "$RUN_DIR/containers" "$R/var/lib/containers"
mount --bind "$RUN_DIR/vartmp" "$R/var/tmp"
mount --bind "$RUN_DIR/bin" "$R/opt/p5/bin"
mount -o remount,bind,ro "$R/opt/p5/bin"
mount --bind "$STORE_MNT" "$R/var/lib/estargz-store/store"
if [[ -n $STORE_ROOT ]]; then
  for m in "$STORE_ROOT:$R/var/lib/estargz-store/root" "$PROJECT:$R/opt/estargz-store" "$(readlink -f "$NODE_BIN"):$R/usr/local/bin/node"; do
    mount --bind "${m%%:*}" "${m#*:}"
    mount -o remount,bind,ro "${m#*:}"
  done
fi

echo "ready $$"
cat >/dev/null || true

# stdin closed: stop whatever container a broken test left running, so that no
# process keeps the namespace (and the store's mount in it) alive; then undo
# the mounts and remove the run's state (the caller may have been killed).
timeout 30 chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  PODMAN_IGNORE_CGROUPSV1_WARNING=1 podman rm -a -f -t 0 >/dev/null 2>&1 || true
umount -R "$R" 2>/dev/null || umount -R -l "$R" 2>/dev/null || true
if [[ -f $RUN_DIR/.podman5-run ]]; then rm -rf --one-file-system "$RUN_DIR"; fi
