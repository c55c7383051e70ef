#!/usr/bin/env bash
# Command round trip at DEVICES connected devices (default 10,000):
# strata-sim devices enrolled and connected over TLS, idle, answering
# commands; cmdrtt calls "echo" on random ones through the API.
#
#   tests/bench/cmdrtt/run.sh [DEVICES] [CALLS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/../../.."
DEVICES=${1:-10000}
CALLS=${2:-2000}
CONC=${3:-16}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
go build -o "$work/cmdrtt" ./tests/bench/cmdrtt
api=127.0.0.1:$(port)
./bin/strata init --dir "$work/node" --name bench --role probe --api-addr "$api" --mqtt-addr "127.0.0.1:$(port)" >/dev/null
./bin/strata serve --config "$work/node/strata.yaml" --log-level warn >"$work/node.log" 2>&1 &
pids+=($!)
spid=$!
for _ in $(seq 100); do ./bin/strata ctl -c "$work/node/strata.yaml" whoami >/dev/null 2>&1 && break; sleep 0.1; done
token=$(./bin/strata token create -c "$work/node/strata.yaml" --kind enroll --group bench 2>/dev/null)
./bin/strata-sim --api "https://$api" --ca "$work/node/tls/ca.crt" --enroll-token "$token" --devices "$DEVICES" \
	--save-credentials "$work/creds.jsonl" --idle --duration 1h --report-interval 0 \
	--source-range 127.0.0.1-127.0.0.4 >"$work/sim.out" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
	n=$(curl -s --cacert "$work/node/tls/ca.crt" -H "Authorization: Bearer $(cat "$work/node/admin.token")" "https://$api/metrics" | awk '/^strata_mqtt_sessions /{print $2}')
	[ "${n%.*}" -ge "$DEVICES" ] 2>/dev/null && break
	sleep 0.5
done
echo "connected sessions: $n; strata node $(grep VmRSS /proc/$spid/status)"
"$work/cmdrtt" --api "https://$api" --ca "$work/node/tls/ca.crt" --token "@$work/node/admin.token" --credentials "$work/creds.jsonl" --calls "$CALLS" --concurrency "$CONC"
