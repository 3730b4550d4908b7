#!/bin/bash
# tools/deps.sh - installs what building, testing and the demo need on
# Debian 12: the build tools and -dev libraries, PostgreSQL 15, and the
# test S3 server's npm packages (npm ci, pinned by package-lock.json).
# Only missing packages are installed; run as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(build-essential autoconf automake pkg-config
	libsqlite3-dev libpq-dev libxml2-dev libcjson-dev libcurl4-openssl-dev
	libssl-dev libsystemd-dev
	postgresql-15 pgbouncer sqlite3 curl openssl ca-certificates faketime
	debhelper fakeroot dpkg-dev valgrind clang libclang-rt-14-dev llvm-14)
# issue 16: journald (it-journal), promtool, lintian, man pages, completion
pkgs+=(systemd prometheus lintian groff man-db bash-completion)
pkgs+=("$@")
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/outboxd-apt.log 2>&1; then
		$sudo apt-get update -q >>/tmp/outboxd-apt.log 2>&1 || true
		$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/outboxd-apt.log 2>&1 || {
			tail -20 /tmp/outboxd-apt.log
			echo "deps: apt-get install failed (log: /tmp/outboxd-apt.log)" >&2
			exit 69
		}
	fi
fi

# The test S3 server and the verifying proxy's signer.
if [ ! -f node_modules/.package-lock.json ] ||
	! cmp -s <(sed -n '/"packages"/,$p' package-lock.json | sha256sum) \
		<(cat node_modules/.outboxd-lock.sha256 2>/dev/null); then
	echo "deps: npm ci"
	npm ci --no-audit --no-fund --loglevel=error >/tmp/outboxd-npm.log 2>&1 || {
		tail -20 /tmp/outboxd-npm.log
		echo "deps: npm ci failed (log: /tmp/outboxd-npm.log)" >&2
		exit 69
	}
	sed -n '/"packages"/,$p' package-lock.json | sha256sum >node_modules/.outboxd-lock.sha256
fi
