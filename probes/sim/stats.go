package sim

import (
	"encoding/json"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// stats are the fleet's counters, updated from many goroutines.
type stats struct {
	enrolled, enrollRetries                  atomic.Int64
	connected, connects, attempts            atomic.Int64
	disconnects, reconnects, subscribeFailed atomic.Int64
	sessionsAbsent                           atomic.Int64
	due, sent, acked, skipped, lost          atomic.Int64
	cmdReceived, cmdDuplicate, cmdExpired    atomic.Int64
	cmdAnswered, cmdInvalid, unexpectedPub   atomic.Int64
	installs                                 atomic.Int64

	connectLat, pubackLat, commandLat histogram

	mu             sync.Mutex
	enrollFailures map[string]int64
	connectFails   map[string]int64
	disconnectWhy  map[string]int64
	installFails   map[string]int64
}

// count adds one to m[reason] and reports whether the reason is new.
func (s *stats) count(m *map[string]int64, reason string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[reason]++
	return (*m)[reason] == 1
}

// Report is a snapshot of a fleet's figures. Rates are over the phase they
// belong to: connections per second over the connect phase, acknowledged
// messages per second over the telemetry phase (sent messages at QoS 0).
type Report struct {
	Phase   string        `json:"phase"` // enrolling, connecting, running, stopping, done
	Elapsed time.Duration `json:"-"`
	Devices int           `json:"devices"`

	Enrolled       int64            `json:"enrolled"`
	EnrollRetries  int64            `json:"enroll_retries"`
	EnrollFailures map[string]int64 `json:"enroll_failures,omitempty"`
	EnrollTime     time.Duration    `json:"-"`

	// Connected is the number of sessions open now; in the final report,
	// when the telemetry phase ended.
	Connected       int64            `json:"connected"`
	ConnectAttempts int64            `json:"connect_attempts"`
	Connects        int64            `json:"connects"` // successful, reconnections included
	ConnectFailures map[string]int64 `json:"connect_failures,omitempty"`
	ConnectTime     time.Duration    `json:"-"` // the connect phase
	ConnectRate     float64          `json:"connect_rate"`
	ConnectLatency  Latency          `json:"connect_latency"` // dial to CONNACK

	Disconnects       int64            `json:"disconnects"` // not asked by the simulator
	DisconnectReasons map[string]int64 `json:"disconnect_reasons,omitempty"`
	Reconnects        int64            `json:"reconnects"`
	// SessionsAbsent counts connections (CleanSession false) the broker
	// answered with no session present: the device's first, or one whose
	// session the broker dropped.
	SessionsAbsent    int64 `json:"sessions_absent"`
	SubscribeFailures int64 `json:"subscribe_failures"`

	Due           int64         `json:"due"` // messages the rate asked for
	Sent          int64         `json:"sent"`
	Acked         int64         `json:"acked"`
	Skipped       int64         `json:"skipped"` // ticks dropped: device offline or backlog full
	Lost          int64         `json:"lost"`    // unacknowledged when the session was lost
	Inflight      int64         `json:"inflight"`
	TelemetryTime time.Duration `json:"-"`
	MessageRate   float64       `json:"message_rate"`
	PubackLatency Latency       `json:"puback_latency"` // publish to PUBACK

	CommandsReceived  int64 `json:"commands_received"`
	CommandsDuplicate int64 `json:"commands_duplicate"`
	CommandsExpired   int64 `json:"commands_expired"`
	CommandsInvalid   int64 `json:"commands_invalid"`
	// CommandsAnswered counts first results acknowledged by the broker;
	// CommandLatency is command receipt to that PUBACK.
	CommandsAnswered    int64   `json:"commands_answered"`
	CommandLatency      Latency `json:"command_latency"`
	UnexpectedPublishes int64   `json:"unexpected_publishes"`

	// Installs counts pretend installs that downloaded and verified their
	// artifact; InstallFailures the others by reason (refused, or the
	// download's: http_<status>, digest, network, canceled).
	Installs        int64            `json:"installs"`
	InstallFailures map[string]int64 `json:"install_failures,omitempty"`
}

// MarshalJSON adds the durations as seconds.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		plain
		Elapsed   float64 `json:"elapsed_s"`
		Enroll    float64 `json:"enroll_s"`
		Connect   float64 `json:"connect_s"`
		Telemetry float64 `json:"telemetry_s"`
	}{plain(r), r.Elapsed.Seconds(), r.EnrollTime.Seconds(), r.ConnectTime.Seconds(), r.TelemetryTime.Seconds()})
}

// snapshot fills the counters of a Report.
func (s *stats) snapshot(r *Report) {
	r.Enrolled, r.EnrollRetries = s.enrolled.Load(), s.enrollRetries.Load()
	r.Connected, r.Connects, r.ConnectAttempts = s.connected.Load(), s.connects.Load(), s.attempts.Load()
	r.Disconnects, r.Reconnects = s.disconnects.Load(), s.reconnects.Load()
	r.SessionsAbsent = s.sessionsAbsent.Load()
	r.SubscribeFailures = s.subscribeFailed.Load()
	r.Due, r.Sent, r.Acked, r.Skipped, r.Lost = s.due.Load(), s.sent.Load(), s.acked.Load(), s.skipped.Load(), s.lost.Load()
	r.CommandsReceived, r.CommandsDuplicate = s.cmdReceived.Load(), s.cmdDuplicate.Load()
	r.CommandsExpired, r.CommandsInvalid = s.cmdExpired.Load(), s.cmdInvalid.Load()
	r.CommandsAnswered = s.cmdAnswered.Load()
	r.UnexpectedPublishes = s.unexpectedPub.Load()
	r.Installs = s.installs.Load()
	r.ConnectLatency = s.connectLat.latency()
	r.PubackLatency = s.pubackLat.latency()
	r.CommandLatency = s.commandLat.latency()
	s.mu.Lock()
	r.EnrollFailures = maps.Clone(s.enrollFailures)
	r.ConnectFailures = maps.Clone(s.connectFails)
	r.DisconnectReasons = maps.Clone(s.disconnectWhy)
	r.InstallFailures = maps.Clone(s.installFails)
	s.mu.Unlock()
}
