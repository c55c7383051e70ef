package federation

import (
	"bytes"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// FuzzFrame feeds arbitrary bytes to the frame reader and to every message
// decoder: errors are fine, panics and unbounded allocation are not.
func FuzzFrame(f *testing.F) {
	seeds := []struct {
		k kind
		v any
	}{
		{kindHello, hello{Version: 1, Node: "p1", LogID: "ab", Publish: []model.Path{"/devices"}, Below: []string{"x"}, Head: 9}},
		{kindWelcome, welcome{Version: 1, Node: "hq", Grant: GrantRead, Cursor: 3}},
		{kindJoin, join{Node: "p1", Token: "sj_x", CSR: []byte{1, 2}}},
		{kindBatch, batch{Last: 5, Head: 6, Entries: []model.Entry{{Seq: 5, Time: time.Unix(1, 0), Mutation: model.Mutation{Op: model.OpPut, Path: "/a"}}}}},
		{kindSnapshotChunk, snapshotChunk{Contexts: []*model.Context{{Path: "/a", Type: "device"}}}},
		{kindRequest, request{Op: opCall, Path: "/a", Call: &CallRequest{Function: "ping"}}},
		{kindResponse, response{Code: codeNotFound, Error: "x"}},
		{kindAck, ack{Seq: 7}},
		{kindFetch, fetchReq{SHA256: "ab", Offset: 9}},
		{kindFetchHead, fetchHead{Size: 10}},
	}
	for _, s := range seeds {
		b, err := encodeFrame(s.k, s.v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data), 1<<16)
		for range 8 {
			k, body, err := fr.next()
			if err != nil {
				return
			}
			var targets = []any{&hello{}, &welcome{}, &join{}, &joined{}, &refuse{}, &renew{}, &renewed{}, &below{},
				&batch{}, &snapshotBegin{}, &snapshotChunk{}, &snapshotEnd{}, &gap{}, &ack{}, &request{}, &response{}, &fetchReq{}, &fetchHead{}}
			for _, v := range targets {
				decode(k, body, v)
			}
			var b batch
			if decode(k, body, &b) == nil {
				m := &mount{path: "/peers/x"}
				for _, e := range b.Entries {
					if mu, reason := m.translate(e, newBounds(m.path, nil, nil)); reason == "" {
						mu.Validate()
					}
				}
			}
		}
	})
}

// FuzzJoinToken: token parsing never panics and accepts only well-formed
// tokens.
func FuzzJoinToken(f *testing.F) {
	tok, _, err := newJoinToken([]byte("ca"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("sj_")
	f.Add("sj_abc.def")
	f.Fuzz(func(t *testing.T, s string) {
		hash, fp, err := parseJoinToken(s)
		if err == nil && (len(hash) != 32 || len(fp) != 32) {
			t.Fatalf("accepted %q with hash %d and fingerprint %d bytes", s, len(hash), len(fp))
		}
	})
}

func TestEffective(t *testing.T) {
	cases := []struct {
		pub, acc []model.Path
		want     string
	}{
		{nil, nil, "[/]"},
		{[]model.Path{"/devices"}, nil, "[/devices]"},
		{nil, []model.Path{"/devices/a", "/groups"}, "[/devices/a /groups]"},
		{[]model.Path{"/devices"}, []model.Path{"/devices/a", "/groups"}, "[/devices/a]"},
		{[]model.Path{"/devices/a", "/devices"}, nil, "[/devices]"},
		{[]model.Path{"/x"}, []model.Path{"/y"}, "[]"},
	}
	for _, c := range cases {
		if got := fmtPaths(effective(c.pub, c.acc)); got != c.want {
			t.Errorf("effective(%v, %v) = %s, want %s", c.pub, c.acc, got, c.want)
		}
	}
	if n, rest, ok := splitMounted("/peers/eu/peers/p7/devices/x"); !ok || n != "eu" || rest != "/peers/p7/devices/x" {
		t.Errorf("split: %q %q %v", n, rest, ok)
	}
	if n, rest, ok := splitMounted("/peers/eu"); !ok || n != "eu" || rest != "/" {
		t.Errorf("split mount root: %q %q %v", n, rest, ok)
	}
	if _, _, ok := splitMounted("/devices/x"); ok {
		t.Error("split a local path")
	}
}

func fmtPaths(ps []model.Path) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(string(p))
	}
	b.WriteByte(']')
	return b.String()
}

func TestDialBind(t *testing.T) {
	cases := []struct {
		ups  []Upstream
		want string
	}{
		{nil, "127.0.0.1:0"},
		{[]Upstream{{Address: "127.0.0.1:7443"}, {Address: "127.0.0.2:1"}}, "127.0.0.1:0"},
		{[]Upstream{{Address: "127.0.0.1:7443"}, {Address: "hq.example:7443"}}, ":0"},
		{[]Upstream{{Address: "[::1]:7443"}}, ":0"},
		{[]Upstream{{Address: "10.0.0.1:7443"}}, ":0"},
	}
	for _, c := range cases {
		if got := dialBind(c.ups); got != c.want {
			t.Errorf("dialBind(%v) = %q, want %q", c.ups, got, c.want)
		}
	}
}

// A batch of raw entries (as a provider sends them, straight from its
// store) is byte for byte the batch of the same entries decoded, so every
// consumer version reads it.
func TestRawBatchEncodesAsBatch(t *testing.T) {
	now := time.Now()
	es := []model.Entry{
		{Seq: 7, Time: now, Mutation: model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device",
			Variables: map[string]model.Variable{"t": {Value: []byte("21.5"), Type: model.TypeNumber, Time: now}}}},
		{Seq: 9, Time: now, Mutation: model.Mutation{Op: model.OpEvent, Path: "/devices/a",
			Event: &model.Event{Name: "alarm", Level: "error", Time: now}}},
	}
	raw := rawBatch{Last: 9, Head: 12}
	for i := range es {
		b, err := model.Marshal(&es[i])
		if err != nil {
			t.Fatal(err)
		}
		raw.Entries = append(raw.Entries, b)
	}
	got, err := encodeFrame(kindBatch, raw)
	if err != nil {
		t.Fatal(err)
	}
	want, err := encodeFrame(kindBatch, batch{Entries: es, Last: 9, Head: 12})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("raw batch frame differs:\n%x\n%x", got, want)
	}
}
