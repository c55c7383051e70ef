#!/bin/sh
# After installing or upgrading the strata-agent package (deb: configure;
# rpm: 1 or 2): makes systemd read the unit. A running agent is not
# restarted: it may be the one running this upgrade (its install
# function), and a restart would kill the package manager with it. The
# new binary runs from the agent's next start.
set -e
case "$1" in
configure | 1 | 2) ;;
*) exit 0 ;;
esac
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
