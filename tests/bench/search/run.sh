#!/usr/bin/env bash
# Inventory search on a PostgreSQL primary and its streaming replica, side
# by side in one run (see main.go):
#
#   tests/bench/search/run.sh [DEVICES] [QUERIES] [CLIENTS]
#
# Needs the PostgreSQL server binaries (/usr/lib/postgresql/*/bin, or
# $STRATA_PG_BIN; scripts/install-test-deps.sh). Everything listens on
# 127.0.0.1; the clusters live in temporary directories removed at exit.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DEVICES=${1:-1000000}
QUERIES=${2:-2000}
CLIENTS=${3:-4}
exec go run ./tests/bench/search -devices "$DEVICES" -queries "$QUERIES" -clients "$CLIENTS"
