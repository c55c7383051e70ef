#!/usr/bin/env bash
# Installs what the test suite needs beyond Go: the PostgreSQL server
# binaries (Debian/Ubuntu package `postgresql`), from which the tests start
# throwaway clusters. Idempotent: does nothing when they are present.
set -euo pipefail

if compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	exit 0
fi
if ! command -v apt-get >/dev/null; then
	echo "install-test-deps: no apt-get; install the PostgreSQL server binaries yourself" >&2
	echo "  and point STRATA_PG_BIN at the directory holding initdb and postgres" >&2
	exit 1
fi
sudo=
if [ "$(id -u)" -ne 0 ]; then
	sudo=sudo
fi
# env: sudo would drop an exported DEBIAN_FRONTEND.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	echo "install-test-deps: postgresql installed but no /usr/lib/postgresql/*/bin/initdb" >&2
	exit 1
fi
