#!/bin/sh
# Before removing the package (deb: remove; rpm: 0, not an upgrade): stops
# its service (@UNIT@: strata or strata-agent, filled in by the build).
set -e
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	systemctl disable --now "@UNIT@.service" || true
fi
