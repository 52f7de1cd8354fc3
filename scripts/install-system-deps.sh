#!/usr/bin/env bash
# Installs the Debian packages estargz-store's build and tests need.
# Idempotent: packages already installed are skipped. Run as root.
set -euo pipefail

PKGS=(
  ca-certificates
  # the reference eStargz implementation (Go source): the interop tests build
  # it to cross-check our reader and writer in both directions; the e2e and
  # podman benchmarks build its store package (bench/goref) to measure it
  # beside ours (all its Go dependencies come with this package's Depends)
  golang-go
  golang-github-containerd-stargz-snapshotter-dev
  # a real registry (Distribution 2.8) for the registry tests, with htpasswd
  # (bcrypt) and a token server that signs with an openssl-made certificate
  docker-registry
  apache2-utils
  openssl
  # FUSE: the store speaks the kernel's protocol over /dev/fuse itself
  # (native/, built by `npm ci` through node-gyp: a C compiler and make, and
  # the kernel's <linux/fuse.h>) and mounts with mount(2) as root, so no
  # libfuse and no fusermount
  build-essential
  linux-libc-dev
  # the zstd decoder addon (native/zstd_decode.c) links the system's libzstd;
  # the zstd:chunked tests check it against the zstd command
  libzstd-dev
  zstd
  # podman pulls and runs the images the tests convert; busybox-static and
  # this machine's python3.11 make runnable test images without network access;
  # python3 also dumps trees with their xattrs for the tree-equality tests
  podman
  runc
  conmon
  containernetworking-plugins
  iptables
  busybox-static
  python3
  python3.11
  # the podman 5 tests run Debian 13's podman 5.4 in a chroot that their set-up
  # builds once with debootstrap (testkit/podman5.ts, scripts/podman5/)
  debootstrap
  # the benchmarks compare against `curl | gunzip` and read peak RSS and CPU
  # time of child processes from GNU time
  curl
  time
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "system packages: all present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "missing packages: ${missing[*]}; run this script as root (sudo $0)" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
