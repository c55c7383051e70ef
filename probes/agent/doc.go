// Package agent is strata-agent, the reference device agent: it enrolls a
// device with a node, then keeps one MQTT 3.1.1 session over TLS to the
// node's device endpoint and speaks the contract of docs/mqtt.md.
//
// What it does while running:
//   - publishes its inventory (GatherInventory) at every connect and every
//     inventory interval;
//   - samples telemetry (SampleTelemetry) every telemetry interval;
//   - runs the commands it receives on strata/<id>/cmd/+ (ping, reboot,
//     set-config, run-script, collect-logs, install) on a bounded pool of
//     workers, each job id at most once, and answers on
//     strata/<id>/cmd/<job>/result;
//   - installs signed releases (install.go): verified against its own
//     trusted keys, downloaded from the node with resume (probes/download),
//     installed with dpkg, rpm, a tar or binary and a current link, or a
//     script, health-checked and rolled back.
//
// Telemetry, events and results go through an fsynced on-disk queue in the
// state directory and leave it only once the broker acknowledged them
// (PUBACK): nothing is lost while offline or across kill -9; delivery is at
// least once. The state directory holds:
//
//	credentials.json  enrollment response (0600)
//	config.json       settings changed by set-config
//	queue.log         outbound queue records
//	queue.head        first queue sequence number still owed
//	jobs.log          job ids run, for at-most-once execution
//	software.json     releases installed, with their previous versions
//	downloads/        artifacts being downloaded (<sha256>.part)
//	packages/<name>/  deb and rpm files kept for rollback
//	agent.lock        held (flock) by the running agent
//
// The package links nothing of the node (no store, Raft or broker): a test
// holds that rule for cmd/strata-agent.
package agent
