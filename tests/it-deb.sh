#!/bin/bash
# it-deb.sh - the Debian package: `make deb` builds a .deb from `make dist`;
# lintian --pedantic finds no error, warning or pedantic tag in it; its
# maintainer scripts stop the service on removal and restart it on
# upgrade (when enabled or running) but start nothing at the first
# install; dpkg -i installs it without a warning; its postinst creates
# the system user; outboxd --version runs from /usr/bin; the manual
# pages, bash completion and every Documentation= of the unit are there;
# systemd-analyze verifies the installed unit and rates its sandbox;
# dpkg --purge removes it and the user. Runs where OUTBOXD_TEST_DEB=1
# (tools/test.sh sets it once, as root); it changes the system, so not by
# default.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
it_init deb
if [ "${OUTBOXD_TEST_DEB:-0}" != 1 ] || [ "$(id -u)" != 0 ]; then
	t_skip "the Debian package" "set OUTBOXD_TEST_DEB=1 and run as root"
	t_done
	exit 0
fi
command -v dpkg-buildpackage >/dev/null || t_bail "dpkg-buildpackage missing (apt-get install dpkg-dev debhelper)"
# In a build tree of its own: `make dist` must not touch the tree whose
# tests are running.
mkdir -p "$IT_DIR/build"
t_ok "configure a separate build tree" bash -c "cd '$IT_DIR/build' && '$abs_top_srcdir/configure' -q >'$IT_DIR/configure.log' 2>&1"
t_ok "make deb builds the package" make -C "$IT_DIR/build" -s deb
deb=$(ls "$IT_DIR"/build/outboxd_*.deb | head -1)

# --- lintian
command -v lintian >/dev/null || t_bail "lintian missing (apt-get install lintian)"
lintian --pedantic --display-info "$deb" >"$IT_DIR/lintian.out" 2>&1 || true
t_diag "lintian --pedantic --display-info: $(wc -l <"$IT_DIR/lintian.out") lines"
_it_diag_file "$IT_DIR/lintian.out"
t_is "$(grep -Ec '^[EW]: ' "$IT_DIR/lintian.out" || true)" 0 "lintian --pedantic: no error, no warning"
t_is "$(grep -c '^P: ' "$IT_DIR/lintian.out" || true)" 0 "and no pedantic tag"

# --- what the maintainer scripts do with the service
mkdir -p "$IT_DIR/ctl"
dpkg-deb -e "$deb" "$IT_DIR/ctl"
_stops_on_remove() { grep -A2 '"$1" = remove' "$IT_DIR/ctl/prerm" | grep -q "deb-systemd-invoke stop 'outboxd.service'"; }
_restarts_on_upgrade() {
	grep -q '_dh_action=restart' "$IT_DIR/ctl/postinst" &&
		grep -q "deb-systemd-invoke \$_dh_action 'outboxd.service'" "$IT_DIR/ctl/postinst"
}
t_ok "prerm stops the service on removal" _stops_on_remove
t_ok "postinst restarts it on upgrade" _restarts_on_upgrade
# --no-enable: enable is only re-done on upgrade, where the admin had it.
_enables_only_if_it_was() {
	grep -B6 "deb-systemd-helper enable 'outboxd.service'" "$IT_DIR/ctl/postinst" |
		grep -q "deb-systemd-helper debian-installed 'outboxd.service'"
}
t_ok "and does not enable it at install (deb-systemd-invoke starts only enabled units)" \
	_enables_only_if_it_was

rc=0
dpkg -i "$deb" >"$IT_DIR/dpkg-i.out" 2>&1 || rc=$?
t_is "$rc" 0 "dpkg -i installs it"
t_ok "without a warning" bash -c "! grep -i 'warn' '$IT_DIR/dpkg-i.out'"
t_ok "the postinst created the system user outboxd" getent passwd outboxd
t_ok "outboxd --version runs from /usr/bin" bash -c "/usr/bin/outboxd --version | grep -q '^outboxd '"
t_ok "outboxctl is installed" test -x /usr/bin/outboxctl
t_ok "systemd-analyze verify accepts the unit" systemd-analyze verify /lib/systemd/system/outboxd.service
score=$(systemd-analyze security --offline=true /lib/systemd/system/outboxd.service 2>/dev/null |
	sed -n 's/.*Overall exposure level for outboxd.service: \([0-9.]*\).*/\1/p')
t_diag "systemd-analyze security: exposure $score"
t_ok "the sandbox rates OK or better (exposure $score < 2.0)" awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.0) }'
t_ok "the sysctl drop-in is installed" test -f /usr/lib/sysctl.d/60-outboxd.conf
for p in outboxd.8 outboxctl.8 outboxd.env.5; do
	t_ok "man page $p is installed" test -f "/usr/share/man/man${p##*.}/$p.gz"
done
t_ok "bash completion for outboxctl is where bash-completion looks" \
	test -f "$(pkg-config --variable=completionsdir bash-completion)/outboxctl"
_docs_exist() {
	local d
	for d in $(sed -n 's/^Documentation=//p' /lib/systemd/system/outboxd.service); do
		case $d in
		file:*) test -f "${d#file:}" || { echo "missing $d"; return 1; } ;;
		man:*) d=${d#man:}; man -w "${d%%(*}" >/dev/null || { echo "no page $d"; return 1; } ;;
		esac
	done
}
t_ok "every Documentation= of the unit exists" _docs_exist
t_ok "the env file is private to the outboxd group" bash -c "[ \"\$(stat -c %a:%G /etc/outboxd/outboxd.env)\" = 640:outboxd ]"
t_ok "dpkg --purge removes it" dpkg --purge outboxd
t_ok "and the system user" bash -c "! getent passwd outboxd"
t_done
