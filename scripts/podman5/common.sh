# common.sh: settings shared by build-chroot.sh and session.sh (sourced).
#
# The podman 5 tests run Debian 13 ("trixie")'s podman 5.4 in a chroot on this
# Debian 12 machine, whose own podman is 4.3.1. The chroot is built once by
# build-chroot.sh and kept in a cache directory; every test run enters it
# through session.sh, in a mount namespace of its own.
#
#   PODMAN5_CACHE    cache directory (default /var/cache/estargz-store/podman5):
#                    rootfs/ (the chroot), ready (marker with the versions),
#                    lock (flock), build.log
#   PODMAN5_MIRROR   Debian mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   PODMAN5_REBUILD  1: build-chroot.sh rebuilds even a ready chroot

P5_CACHE=${PODMAN5_CACHE:-/var/cache/estargz-store/podman5}
P5_ROOTFS=$P5_CACHE/rootfs
P5_READY=$P5_CACHE/ready
P5_LOCK=$P5_CACHE/lock
P5_MIRROR=${PODMAN5_MIRROR:-http://deb.debian.org/debian}
P5_SUITE=trixie

# On top of debootstrap's minbase. runc, not crun: this machine has cgroups v1
# with a hybrid layout that crun refuses. netavark is podman's network backend
# even with netns = "host"; catatonit is its --init.
P5_PACKAGES=(podman runc conmon netavark aardvark-dns fuse-overlayfs catatonit ca-certificates)

# Runs a command in the chroot at $1 with a clean environment.
p5_in_chroot() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 "$@"
}
