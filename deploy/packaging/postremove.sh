#!/bin/sh
# After removing the package: makes systemd forget the unit. The state
# (/var/lib/@UNIT@) and the user are kept: remove them by hand.
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
