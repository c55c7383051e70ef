package apitypes

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// golden is one shape pinned: v must encode to exactly want, and want must
// decode back to v. A failure here means a JSON contract changed: change
// the golden text only if the change is deliberate (and documented in
// docs/api.md or docs/mqtt.md).
type golden struct {
	name string
	v    any // a pointer to a value of the shape
	want string
}

func checkGolden(t *testing.T, cases []golden) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(c.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("encodes as\n%s\nwant\n%s", got, c.want)
			}
			back := reflect.New(reflect.TypeOf(c.v).Elem())
			if err := json.Unmarshal([]byte(c.want), back.Interface()); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Interface(), c.v) {
				t.Fatalf("decodes as %+v, want %+v", back.Elem().Interface(), reflect.ValueOf(c.v).Elem().Interface())
			}
		})
	}
}

func TestGoldenErrors(t *testing.T) {
	checkGolden(t, []golden{
		{"error", &ErrorBody{Message: "context /x: not found", Code: CodeNotFound},
			`{"error":"context /x: not found","code":"not_found"}`},
		{"empty", &ErrorBody{}, `{"error":"","code":""}`},
	})
}

func TestGoldenEnrollment(t *testing.T) {
	checkGolden(t, []golden{
		{"request", &EnrollRequest{Token: "se_x", HardwareID: "hw-1"},
			`{"token":"se_x","hardware_id":"hw-1"}`},
		{"request with csr", &EnrollRequest{Token: "se_x", HardwareID: "hw-1", CSRPEM: "-----BEGIN CSR"},
			`{"token":"se_x","hardware_id":"hw-1","csr_pem":"-----BEGIN CSR"}`},
		{"enrollment", &Enrollment{DeviceID: "d1", MQTTUsername: "d1", MQTTPassword: "sd_1", MQTTAddress: "h:8883",
			CAPEM: "-----BEGIN CA", Path: "/devices/d1", Tenant: "acme", Group: "pumps", TopicPrefix: "strata/d1/"},
			`{"device_id":"d1","mqtt_username":"d1","mqtt_password":"sd_1","mqtt_address":"h:8883","ca_pem":"-----BEGIN CA",` +
				`"path":"/devices/d1","tenant":"acme","group":"pumps","topic_prefix":"strata/d1/"}`},
		{"enrollment with certificate, shared", &Enrollment{DeviceID: "d2", MQTTUsername: "d2", MQTTPassword: "sd_2",
			CAPEM: "ca", CertPEM: "cert", Path: "/devices/d2", TopicPrefix: "strata/d2/"},
			`{"device_id":"d2","mqtt_username":"d2","mqtt_password":"sd_2","mqtt_address":"","ca_pem":"ca","cert_pem":"cert",` +
				`"path":"/devices/d2","tenant":"","group":"","topic_prefix":"strata/d2/"}`},
	})
	type path string // the node's own path type encodes the same
	got, _ := json.Marshal(EnrollmentOf[path]{DeviceID: "d1", Path: "/devices/d1"})
	want, _ := json.Marshal(Enrollment{DeviceID: "d1", Path: "/devices/d1"})
	if string(got) != string(want) {
		t.Fatalf("EnrollmentOf[path] encodes as %s, want %s", got, want)
	}
}

func TestGoldenCommands(t *testing.T) {
	deadline := time.Date(2026, 11, 23, 10, 5, 0, 0, time.UTC)
	checkGolden(t, []golden{
		{"command", &Command{Job: "j1", Function: "ping", Args: json.RawMessage(`{"n":1}`), Deadline: deadline},
			`{"job":"j1","function":"ping","args":{"n":1},"deadline":"2026-11-23T10:05:00Z"}`},
		{"succeeded", &CommandResult{Status: ResultSucceeded, Result: json.RawMessage(`{"pong":true}`)},
			`{"status":"succeeded","result":{"pong":true}}`},
		{"failed", &CommandResult{Status: ResultFailed, Error: "unknown function"},
			`{"status":"failed","error":"unknown function"}`},
		{"running", &CommandResult{Status: ResultRunning}, `{"status":"running"}`},
	})
}

func TestGoldenJobs(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	job := Job{ID: "j1", Path: "/devices/d1", Device: "d1", Tenant: "acme", Function: "ping",
		Args: json.RawMessage(`{"n":1}`), CreatedBy: "alice", Created: t0, Deadline: t0.Add(time.Hour),
		State: JobSucceeded, Updated: t0.Add(time.Second), Result: json.RawMessage(`{"pong":true}`),
		History: []JobTransition{{State: JobQueued, Time: t0}, {State: JobSucceeded, Time: t0.Add(time.Second), Detail: "by device"}}}
	jobJSON := `{"id":"j1","path":"/devices/d1","device":"d1","tenant":"acme","function":"ping","args":{"n":1},` +
		`"created_by":"alice","created":"2026-11-23T10:00:00Z","deadline":"2026-11-23T11:00:00Z","state":"succeeded",` +
		`"updated":"2026-11-23T10:00:01Z","result":{"pong":true},"history":[{"state":"queued","time":"2026-11-23T10:00:00Z"},` +
		`{"state":"succeeded","time":"2026-11-23T10:00:01Z","detail":"by device"}]}`
	routed := Job{ID: "j2", Path: "/peers/eu/devices/d2", State: JobFailed, Error: "no such script",
		Node: "/peers/eu", Job: "j2"}
	checkGolden(t, []golden{
		{"job", &job, jobJSON},
		{"queued, no history yet", &Job{ID: "j3", State: JobQueued},
			`{"id":"j3","path":"","device":"","tenant":"","function":"","created_by":"","created":"0001-01-01T00:00:00Z",` +
				`"deadline":"0001-01-01T00:00:00Z","state":"queued","updated":"0001-01-01T00:00:00Z","history":null}`},
		{"routed", &routed,
			`{"id":"j2","path":"/peers/eu/devices/d2","device":"","tenant":"","function":"","created_by":"",` +
				`"created":"0001-01-01T00:00:00Z","deadline":"0001-01-01T00:00:00Z","state":"failed",` +
				`"updated":"0001-01-01T00:00:00Z","error":"no such script","history":null,"node":"/peers/eu","job":"j2"}`},
		{"page", &JobPage{Jobs: []Job{job}, Next: "j1"}, `{"jobs":[` + jobJSON + `],"next":"j1"}`},
		{"last page", &JobPage{Jobs: []Job{}}, `{"jobs":[]}`},
	})
	type path string // the node's own path type encodes the same
	other, _ := json.Marshal(JobOf[path]{ID: job.ID, Path: path(job.Path), Device: job.Device, Tenant: job.Tenant,
		Function: job.Function, Args: job.Args, CreatedBy: job.CreatedBy, Created: job.Created, Deadline: job.Deadline,
		State: job.State, Updated: job.Updated, Result: job.Result, History: job.History})
	if string(other) != jobJSON {
		t.Fatalf("JobOf[path] encodes as %s", other)
	}
	for s, final := range map[JobState]bool{JobQueued: false, JobDelivered: false, JobRunning: false,
		JobSucceeded: true, JobFailed: true, JobExpired: true, JobCancelled: true} {
		if s.Final() != final {
			t.Errorf("%s.Final() = %v", s, !final)
		}
	}
}

func TestGoldenPeers(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	checkGolden(t, []golden{
		{"provider", &Peer{Name: "plant7", Direction: "provider", State: "connected", Grant: "operate",
			Subtrees: []string{"/devices"}, Mount: "/peers/plant7", Cursor: 41, Head: 42, LagEntries: 1, LagSeconds: 0.5,
			Gaps: 1, RTTMillis: 3.25, BytesSent: 10, BytesReceived: 20, Since: t0,
			LastError: "timeout", LastErrorTime: t0.Add(time.Minute), PreviousError: "refused",
			PreviousErrorTime: t0, RejectedEntries: 2, CertExpires: t0.Add(24 * time.Hour), Below: []string{"/peers/plant7/peers/line1"}},
			`{"name":"plant7","direction":"provider","state":"connected","grant":"operate","subtrees":["/devices"],` +
				`"mount":"/peers/plant7","cursor":41,"head":42,"lag_entries":1,"lag_seconds":0.5,"gaps":1,"rtt_ms":3.25,` +
				`"bytes_sent":10,"bytes_received":20,"since":"2026-11-23T10:00:00Z","last_error":"timeout",` +
				`"last_error_time":"2026-11-23T10:01:00Z","previous_error":"refused","previous_error_time":"2026-11-23T10:00:00Z",` +
				`"rejected_entries":2,"cert_expires":"2026-11-24T10:00:00Z","below":["/peers/plant7/peers/line1"]}`},
		{"upstream not joined yet", &Peer{Direction: "consumer", Address: "hq:7443", State: "joining", Since: t0},
			`{"name":"","direction":"consumer","address":"hq:7443","state":"joining","cursor":0,"head":0,"lag_entries":0,` +
				`"lag_seconds":0,"gaps":0,"rtt_ms":0,"bytes_sent":0,"bytes_received":0,"since":"2026-11-23T10:00:00Z"}`},
		{"mount check", &MountCheck{Peer: "plant7", Mount: "/peers/plant7", Seq: 42, Contexts: 7, Digest: "ab", Source: "cd"},
			`{"peer":"plant7","mount":"/peers/plant7","match":false,"seq":42,"contexts":7,"digest":"ab","source":"cd"}`},
		{"mount check error", &MountCheck{Peer: "eu", Mount: "/peers/eu", Error: "unreachable"},
			`{"peer":"eu","mount":"/peers/eu","match":false,"seq":0,"contexts":0,"error":"unreachable"}`},
	})
}

func TestGoldenAudit(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	checkGolden(t, []golden{
		{"call routed down", &AuditRecord{ID: "k1", Time: t0, User: "ada", Tenant: "acme", Op: "call",
			Path: "/peers/eu/devices/d-1", Function: "reboot", Job: "j1", Node: "/peers/eu", Outcome: "forwarded",
			RequestID: "r1"},
			`{"id":"k1","time":"2026-11-23T10:00:00Z","consumer":"","user":"ada","tenant":"acme","op":"call",` +
				`"path":"/peers/eu/devices/d-1","function":"reboot","job":"j1","node":"/peers/eu","outcome":"forwarded",` +
				`"request_id":"r1"}`},
		{"call over a link, ended", &AuditRecord{Time: t0, Consumer: "hq", User: "root", System: true, Via: []string{"hq", "eu"},
			Op: "call", Path: "/devices/d-1", Function: "reboot", Job: "j2", Outcome: "failed", Error: "disk full",
			Updated: t0.Add(time.Minute)},
			`{"time":"2026-11-23T10:00:00Z","consumer":"hq","user":"root","system":true,"via":["hq","eu"],"op":"call",` +
				`"path":"/devices/d-1","function":"reboot","job":"j2","outcome":"failed","error":"disk full",` +
				`"updated":"2026-11-23T10:01:00Z"}`},
		{"refused", &AuditRecord{Time: t0, User: "bob", Op: "context.delete", Path: "/plant", Outcome: "forbidden", Error: "no"},
			`{"time":"2026-11-23T10:00:00Z","consumer":"","user":"bob","op":"context.delete","path":"/plant",` +
				`"outcome":"forbidden","error":"no"}`},
	})
}

func TestGoldenCluster(t *testing.T) {
	checkGolden(t, []golden{
		{"status", &ClusterStatus{Leader: "r1", Term: 3, Members: []ClusterMember{
			{ID: "r1", Address: "10.0.0.1:7400", Role: "voter", State: "leader", AppliedIndex: 42, LastContact: "2026-01-02T03:04:05Z"},
			{ID: "r4", Address: "10.0.0.4:7400", Role: "nonvoter", State: "unreachable"},
		}},
			`{"leader":"r1","term":3,"members":[{"id":"r1","address":"10.0.0.1:7400","role":"voter","state":"leader",` +
				`"applied_index":42,"last_contact":"2026-01-02T03:04:05Z"},` +
				`{"id":"r4","address":"10.0.0.4:7400","role":"nonvoter","state":"unreachable","applied_index":0}]}`},
	})
}
