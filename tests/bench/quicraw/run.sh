#!/usr/bin/env bash
# Raw throughput of one quic-go stream on loopback carrying length-prefixed
# frames (the ceiling for federation catch-up), beside TLS over TCP and
# plain TCP carrying the same frames. Default: 120 MB (1,000,000 entries of
# 120 B) per run, in ~450 KB batch frames and in 120 B single-entry frames.
#
#   tests/bench/quicraw/run.sh [TOTAL_BYTES] [COUNT] [quicraw flags...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
TOTAL=${1:-120000000}
COUNT=${2:-3}
shift 2 2>/dev/null || shift $#
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/quicraw" ./tests/bench/quicraw
echo "$(nproc) CPUs, $(go version | cut -d' ' -f3), $(uname -r)"
"$work/quicraw" -total "$TOTAL" -count "$COUNT" "$@"
