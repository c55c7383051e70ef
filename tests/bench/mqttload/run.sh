#!/usr/bin/env bash
# MQTT load, side by side in one run: the same strata-sim clients and
# payloads against Mosquitto (the raw-broker baseline, plain TCP, anonymous)
# and against a Strata node (plain TCP listener, enrolled devices, every
# QoS 1 message persisted into the tree before its PUBACK).
#
#   tests/bench/mqttload/run.sh [DEVICES] [DURATION] [RATE] [INFLIGHT]
#
# INFLIGHT is each client's window of unacknowledged QoS 1 messages, the
# same for both brokers (default 1). BIN names the directory holding the
# binaries (default bin).
#
# Needs strata and strata-sim in BIN (make build) and mosquitto
# (scripts/install-test-deps.sh). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DEVICES=${1:-100}
DURATION=${2:-15s}
RATE=${3:-200000}
INFLIGHT=${4:-1}
BIN=${BIN:-bin}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Mosquitto baseline.
mport=$(port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\n' "$mport" >"$work/m.conf"
"$MOSQUITTO" -c "$work/m.conf" >"$work/m.log" 2>&1 &
pids+=($!)

# Strata node on Badger with a plain MQTT listener.
api=127.0.0.1:$(port)
tcp=127.0.0.1:$(port)
"$BIN"/strata init --dir "$work/node" --name bench --role probe --api-addr "$api" --mqtt-addr "127.0.0.1:$(port)" >/dev/null
STRATA_MQTT_TCP_ADDR=$tcp "$BIN"/strata serve --config "$work/node/strata.yaml" --log-level warn >"$work/node.log" 2>&1 &
pids+=($!)
spid=$!
for _ in $(seq 100); do "$BIN"/strata ctl -c "$work/node/strata.yaml" whoami >/dev/null 2>&1 && break; sleep 0.1; done
token=$("$BIN"/strata token create -c "$work/node/strata.yaml" --kind enroll --group bench 2>/dev/null)
"$BIN"/strata-sim --api "https://$api" --ca "$work/node/tls/ca.crt" --enroll-token "$token" --devices "$DEVICES" \
	--save-credentials "$work/creds.jsonl" --idle --duration 1s --report-interval 0 >/dev/null

common=(--devices "$DEVICES" --rate "$RATE" --duration "$DURATION" --qos 1 --payload-bytes 100 --inflight "$INFLIGHT" --answer-commands=false --report-interval 0 --json)
# cpu PID: user+system CPU seconds the process has used so far.
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$1/stat"; }
# load NAME BROKER_PID ADDR ARGS...: one simulator run, then its figures
# and the CPU seconds the broker and the simulator used.
load() {
	local name=$1 bpid=$2 addr=$3 before after
	shift 3
	before=$(cpu "$bpid")
	{ TIMEFORMAT='%U %S'; time "$BIN"/strata-sim --mqtt "$addr" --plain "$@" "${common[@]}" >"$work/$name.json"; } 2>"$work/$name.time"
	after=$(cpu "$bpid")
	python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({k:r[k] for k in r if k in ("acked","message_rate","puback_latency","telemetry_s")}))' "$work/$name.json" 2>/dev/null || cat "$work/$name.json"
	echo "cpu seconds: broker $(python3 -c "print(round($after-$before,2))") simulator $(awk '{print $1+$2}' "$work/$name.time")"
}
echo "== mosquitto $($MOSQUITTO -h 2>/dev/null | head -1 | awk '{print $3}') (QoS 1, $DEVICES clients, inflight $INFLIGHT, ~100 B)"
load mosq "${pids[0]}" "127.0.0.1:$mport" --anonymous --id-prefix bench
echo "== strata (QoS 1 persisted, same clients and payloads)"
load strata "$spid" "$tcp" --credentials "$work/creds.jsonl"
echo "strata node RSS: $(grep VmRSS /proc/$spid/status)"
