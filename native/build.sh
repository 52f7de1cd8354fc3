#!/bin/sh
# Builds the FUSE addon (build/Release/fuse_binding.node) with node-gyp, run
# by `npm ci` as this package's install script. It compiles against the
# headers of the node that runs it (<prefix>/include/node: Debian's and
# NodeSource's nodejs packages and the nodejs.org tarballs all ship them), so
# nothing is downloaded. Needs a C compiler, make, python3 and the kernel's
# <linux/fuse.h> (Debian: build-essential, linux-libc-dev).
set -eu
nodedir=${npm_config_nodedir:-$(node -p 'require("path").resolve(process.execPath, "../..")')}
if [ ! -f "$nodedir/include/node/node_api.h" ]; then
  echo "native/build.sh: no node headers in $nodedir/include/node; set npm_config_nodedir to a node source or headers directory" >&2
  exit 1
fi
# npm gives scripts its bundled node-gyp; outside npm, use one on PATH.
if [ -n "${npm_config_node_gyp:-}" ]; then
  exec node "$npm_config_node_gyp" rebuild --nodedir="$nodedir"
fi
exec node-gyp rebuild --nodedir="$nodedir"
