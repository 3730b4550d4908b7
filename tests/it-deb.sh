#!/bin/bash
# it-deb.sh - the Debian package: `make deb` builds a .deb from `make dist`;
# dpkg -i installs it; its postinst creates the system user; outboxd
# --version runs from /usr/bin; systemd-analyze verifies the installed
# unit and rates its sandbox. Runs where OUTBOXD_TEST_DEB=1 (tools/test.sh
# sets it once, as root); it changes the system, so not by default.
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
t_ok "dpkg -i installs it" dpkg -i "$deb"
t_ok "the postinst created the system user outboxd" getent passwd outboxd
t_ok "outboxd --version runs from /usr/bin" bash -c "/usr/bin/outboxd --version | grep -q '^outboxd '"
t_ok "outboxctl is installed" test -x /usr/bin/outboxctl
t_ok "systemd-analyze verify accepts the unit" systemd-analyze verify /lib/systemd/system/outboxd.service
score=$(systemd-analyze security --offline=true /lib/systemd/system/outboxd.service 2>/dev/null |
	sed -n 's/.*Overall exposure level for outboxd.service: \([0-9.]*\).*/\1/p')
t_diag "systemd-analyze security: exposure $score"
t_ok "the sandbox rates OK or better (exposure $score < 2.0)" awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.0) }'
t_ok "the sysctl drop-in is installed" test -f /usr/lib/sysctl.d/60-outboxd.conf
t_ok "the env file is private to the outboxd group" bash -c "[ \"\$(stat -c %a:%G /etc/outboxd/outboxd.env)\" = 640:outboxd ]"
t_done
