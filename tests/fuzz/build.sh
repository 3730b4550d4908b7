#!/bin/bash
# tests/fuzz/build.sh OUTDIR [BUILDDIR] - builds outboxd's libFuzzer targets
# (tests/fuzz/fuzz-*.c) into OUTDIR with clang, AddressSanitizer and UBSan.
#
# BUILDDIR (or $OUTBOXD_BUILDDIR, or $abs_top_builddir) is a configured
# build tree: only its config.h is used. Each target links just the base/,
# config/ and agent/ sources it needs (no store/, no pg, no generated schema
# sources), each compiled once into OUTDIR/obj with coverage instrumentation.
#
# Environment: FUZZ_CC (default clang, else clang-14), FUZZ_CFLAGS (extra
# flags). Exit status: 0 built, 77 when clang or its libFuzzer runtime is
# missing (Debian: apt-get install clang libclang-rt-14-dev), 1 otherwise.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
out=${1:?usage: build.sh OUTDIR [BUILDDIR]}
builddir=${2:-${OUTBOXD_BUILDDIR:-${abs_top_builddir:-}}}
[ -n "$builddir" ] || { echo "build.sh: no build dir (argument 2, OUTBOXD_BUILDDIR or abs_top_builddir)" >&2; exit 1; }
[ -f "$builddir/config.h" ] || { echo "build.sh: $builddir/config.h not found (configure first)" >&2; exit 1; }
builddir=$(cd "$builddir" && pwd)

cc=${FUZZ_CC:-}
if [ -z "$cc" ]; then
	for c in clang clang-14; do
		if command -v "$c" >/dev/null 2>&1; then cc=$c; break; fi
	done
fi
[ -n "$cc" ] || { echo "build.sh: clang not found (apt-get install clang)" >&2; exit 77; }

mkdir -p "$out/obj"
out=$(cd "$out" && pwd)

san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
# shellcheck disable=SC2086
common="-std=gnu11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $san -I$top -I$builddir ${FUZZ_CFLAGS:-}"

# Does this clang have libFuzzer's runtime?
printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
	>"$out/obj/probe.c"
# shellcheck disable=SC2086
if ! "$cc" $common -fsanitize=fuzzer "$out/obj/probe.c" -o "$out/obj/probe" >"$out/obj/probe.log" 2>&1; then
	sed 's/^/build.sh: /' "$out/obj/probe.log" | tail -5 >&2
	echo "build.sh: $cc cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)" >&2
	exit 77
fi

pc() { pkg-config "$@"; }
xml_cflags=$(pc --cflags libxml-2.0)
xml_libs=$(pc --libs libxml-2.0)
cjson_cflags=$(pc --cflags libcjson)
cjson_libs=$(pc --libs libcjson)
curl_cflags=$(pc --cflags libcurl)
curl_libs=$(pc --libs libcurl)
crypto_cflags=$(pc --cflags libcrypto)
crypto_libs=$(pc --libs libcrypto)
pq_cflags=$(pc --cflags libpq)
pq_libs=$(pc --libs libpq)
systemd_libs=$(pc --libs libsystemd)
deps_cflags="$xml_cflags $cjson_cflags $curl_cflags $crypto_cflags $pq_cflags"

# obj SRC: compiles $top/SRC once (again when it changed); prints the object
obj() {
	local src=$top/$1 o
	o=$out/obj/$(echo "$1" | tr / _).o
	o=${o%.c.o}.o
	if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ "$builddir/config.h" -nt "$o" ]; then
		# shellcheck disable=SC2086
		"$cc" $common -fsanitize=fuzzer-no-link $deps_cflags -c "$src" -o "$o"
	fi
	echo "$o"
}

# target NAME "SOURCES" "LIBS"
target() {
	local name=$1 srcs=$2 libs=$3 objs=() s
	for s in $srcs; do objs+=("$(obj "$s")"); done
	# base/util.c (in every target) holds sha256_evp: libcrypto for all.
	# shellcheck disable=SC2086
	"$cc" $common -fsanitize=fuzzer $deps_cflags "$here/$name.c" "${objs[@]}" \
		$libs $crypto_libs -lpthread -o "$out/$name"
	echo "$out/$name"
}

target fuzz-dotenv "base/util.c base/strmap.c config/dotenv.c" ""
target fuzz-keymap "base/util.c base/keymap.c" ""
target fuzz-s3error "base/util.c base/keymap.c base/log.c agent/s3/sigv4.c \
	agent/s3/creds.c agent/s3/s3.c" \
	"$xml_libs $curl_libs $crypto_libs $cjson_libs $systemd_libs"
target fuzz-jobdiff "base/util.c base/keymap.c agent/db/jobmeta.c" "$cjson_libs"
target fuzz-redact "base/util.c base/keymap.c base/listen.c config/redact.c config/cfg.c" \
	"$pq_libs $cjson_libs $curl_libs"
