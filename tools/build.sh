#!/bin/bash
# tools/build.sh [DIR [CONFIGURE ARGS...]] - configures and builds outboxd
# out of tree in DIR (default _build), quietly; prints the build dir.
set -euo pipefail
cd "$(dirname "$0")/.." || exit 1
top=$PWD
dir=${1:-_build}
shift || true
[ -x configure ] && [ configure -nt configure.ac ] && [ Makefile.in -nt Makefile.am ] ||
	autoreconf -fi >/dev/null 2>&1 || { autoreconf -fi; exit 1; }
mkdir -p "$dir"
cd "$dir" || exit 1
if [ ! -f Makefile ] || [ config.status -ot "$top/configure" ]; then
	"$top/configure" -q "$@" >/dev/null
fi
make -s -j"$(nproc)" >/dev/null
pwd
