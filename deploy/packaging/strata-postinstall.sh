#!/bin/sh
# After installing or upgrading the strata package (deb: configure; rpm: 1
# or 2): creates the system user strata, gives it /var/lib/strata and, on
# an upgrade, restarts a running node on the new binary. DPKG_ROOT (dpkg
# --root with --force-script-chrootless) makes it act inside that root
# only.
set -e
upgrade=
case "$1" in
configure) [ -z "${2:-}" ] || upgrade=1 ;;
1) ;;
2) upgrade=1 ;;
*) exit 0 ;;
esac
root="${DPKG_ROOT:-}"
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers --root="${root:-/}" strata.conf
elif [ -z "$root" ]; then
	getent group strata >/dev/null || groupadd --system strata
	getent passwd strata >/dev/null ||
		useradd --system --gid strata --home-dir /var/lib/strata --no-create-home \
			--shell /usr/sbin/nologin --comment "Strata device management node" strata
else
	echo "strata: no systemd-sysusers: create the user strata in $root yourself" >&2
	exit 0
fi
uid=$(awk -F: '$1 == "strata" { print $3 }' "$root/etc/passwd")
gid=$(awk -F: '$1 == "strata" { print $3 }' "$root/etc/group")
if [ "$(id -u)" = 0 ] && [ -n "$uid" ] && [ -n "$gid" ]; then
	chown "$uid:$gid" "$root/var/lib/strata"
fi
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ -n "$upgrade" ]; then
		systemctl try-restart strata.service || true
	fi
fi
