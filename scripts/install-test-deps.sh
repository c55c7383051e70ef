#!/usr/bin/env bash
# Installs what the test suite needs beyond Go, from Debian/Ubuntu packages:
#   postgresql         server binaries; the tests start throwaway clusters
#   mosquitto-clients  mosquitto_pub/mosquitto_sub, devices nobody here wrote
#   mosquitto          the raw-broker baseline of the MQTT benchmarks
#   chromium           the console's browser tests (tests/browser), headless
#   systemd            systemd-analyze and systemd-sysusers: the packages'
#                      test (deploy/build/packages) verifies their units
#   dpkg               installs the .deb into a throwaway root (same test)
#   ca-certificates    the CA bundle make images copies into the images
# and, with go install, versitygw (Versity S3 Gateway), the real
# S3-compatible server of the object store's tests (node/objects/s3test).
# Idempotent: does nothing when they are present.
set -euo pipefail

versitygw_version=v1.8.0
gobin="$(go env GOBIN)"
gobin="${gobin:-$(go env GOPATH)/bin}"
if ! command -v versitygw >/dev/null && [ ! -x "$gobin/versitygw" ]; then
	go install "github.com/versity/versitygw/cmd/versitygw@${versitygw_version}"
fi

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v dpkg >/dev/null || missing+=(dpkg)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null; then
	echo "install-test-deps: no apt-get; install ${missing[*]} yourself" >&2
	echo "  (for PostgreSQL, STRATA_PG_BIN may point at the directory holding initdb and postgres)" >&2
	exit 1
fi
sudo=
if [ "$(id -u)" -ne 0 ]; then
	sudo=sudo
fi
# env: sudo would drop an exported DEBIAN_FRONTEND. policy-rc.d keeps the
# packages' services from starting where a service manager runs.
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	echo "install-test-deps: postgresql installed but no /usr/lib/postgresql/*/bin/initdb" >&2
	exit 1
fi
