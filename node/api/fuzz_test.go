package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

// mustBeBadInput fails unless err maps to 400 (or 413 for a body over its
// limit).
func mustBeBadInput(t *testing.T, err error, in any) {
	t.Helper()
	status, code := errorStatus(err)
	if status != http.StatusBadRequest && status != http.StatusRequestEntityTooLarge {
		t.Fatalf("input %q: error %v maps to %d %s, want 400", in, err, status, code)
	}
}

func FuzzDecodePut(f *testing.F) {
	for _, s := range []string{
		`{"type":"device","labels":{"site":"north"},"variables":{"temp":21.5,"on":true,"o":{"a":[1,2]},"n":null},"tenant":"acme"}`,
		`{}`, `{"variables":{"a":"x"}}`, `{"labels":{"a":""}}`, `null`, `{"typo":1}`, `{"variables":{"..":1}}`,
		`{"variables":{"a":1e999}}`, `{"type":"a"} {}`, `{"tenant":"ACME"}`, "{\"type\":\"\\u0000\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodePut(http.MaxBytesReader(nil, ioNopCloser{bytes.NewReader(data)}, 1<<16), "/a/b")
		if err != nil {
			mustBeBadInput(t, err, data)
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid mutation: %v", err)
		}
		if m.Op != model.OpPut || m.Path != "/a/b" {
			t.Fatalf("mutation %+v", m)
		}
		for name, v := range m.Variables {
			if !json.Valid(v.Value) || v.Type == "" {
				t.Fatalf("variable %s = %+v", name, v)
			}
			if _, err := json.Marshal(renderVariables(m.Variables, v.Time)); err != nil {
				t.Fatalf("variables do not render: %v", err)
			}
		}
	})
}

func FuzzEventBody(f *testing.F) {
	for _, s := range []string{
		`{"level":"info","name":"x","payload":{"a":1}}`, `{"level":"alert"}`, `{"level":"fatal"}`, `{}`,
		`{"level":"info","payload":null}`, `{"level":"warning","payload":[1,"2",{"3":null}]}`, `{"level":"info","x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeEvent(http.MaxBytesReader(nil, ioNopCloser{bytes.NewReader(data)}, 1<<20), "/a")
		if err != nil {
			mustBeBadInput(t, err, data)
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("decoded an invalid mutation: %v", err)
		}
		ev := m.Event
		if m.Op != model.OpEvent || ev == nil || ev.Path != "/a" || (len(ev.Payload) > 0 && !json.Valid(ev.Payload)) ||
			len(ev.Payload) > model.MaxPayloadSize {
			t.Fatalf("mutation %+v", m)
		}
	})
}

// FuzzContextPath sends arbitrary URL paths through the whole handler: no
// redirect, no 5xx, and a context is only ever answered for the path the
// URL spells segment by segment.
func FuzzContextPath(f *testing.F) {
	for _, s := range []string{
		"devices/a", "devices/../devices/a", "devices%2Fa", "devices/%2E%2E/a", "devices//a", "devices/a/",
		"./devices/a", "devices/a%00", "%C3%BC", "devices/a%2", "", "/", "devices/a/functions/f",
	} {
		f.Add(s)
	}
	e := newEnv(f)
	e.want(e.do("PUT", "/api/v1/contexts/devices/a", e.admin, `{"type":"device"}`), 201, "")
	h := e.api.Handler()
	f.Fuzz(func(t *testing.T, s string) {
		p, perr := contextPathOf("/api/v1/contexts/"+s, contextsPrefix)
		if perr != nil {
			mustBeBadInput(t, perr, s)
		} else if q, err := model.ParsePath(string(p)); err != nil || q != p {
			t.Fatalf("%q gave non-canonical %q", s, p)
		}
		u, err := url.ParseRequestURI("/api/v1/contexts/" + s)
		if err != nil || strings.ContainsAny(s, "?#") {
			return
		}
		for _, method := range []string{"GET", "POST"} {
			req := &http.Request{Method: method, URL: u, Header: http.Header{"Authorization": {"Bearer " + e.admin}},
				Host: "x", RemoteAddr: "127.0.0.1:1", Body: http.NoBody}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			switch st := rec.Code; {
			case st >= 300 && st < 400, st >= 500 && st != http.StatusNotImplemented:
				t.Fatalf("%s %q: %d %s", method, u.EscapedPath(), st, rec.Body)
			case st == http.StatusOK && method == "GET":
				var c contextJSON
				json.Unmarshal(rec.Body.Bytes(), &c)
				want, err := contextPathOf(u.EscapedPath(), contextsPrefix)
				if err != nil || c.Path != want {
					t.Fatalf("%q answered context %q, the URL spells %q (%v)", u.EscapedPath(), c.Path, want, err)
				}
			}
		}
	})
}

type ioNopCloser struct{ *bytes.Reader }

func (ioNopCloser) Close() error { return nil }

func FuzzCallBody(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `{"args":{"n":1},"wait":"10s","deadline":"2026-11-23T10:05:00Z"}`, `{"args":null,"ttl":"1h"}`,
		`{"wait":"6m"}`, `{"ttl":"1h","deadline":"2026-01-01T00:00:00Z"}`, `{"args":[1]}`, `{"x":1}`, `{} {}`, ` `,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseCall(data, now)
		if err != nil {
			mustBeBadInput(t, err, data)
			return
		}
		if c.wait < 0 || c.wait > MaxCallWait || (c.args != nil && !json.Valid(c.args)) {
			t.Fatalf("%q decoded to %+v", data, c)
		}
	})
}

func FuzzJobQuery(f *testing.F) {
	for _, s := range []string{
		"", "path=/devices&device=d-1&state=queued&limit=10&before=j1", "state=done", "limit=0", "limit=1001",
		"path=/a/../b", "path=devices", "limit=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := url.ParseQuery(s)
		if err != nil {
			return
		}
		q, err := parseJobQuery(v)
		if err != nil {
			mustBeBadInput(t, err, s)
			return
		}
		if p, err := model.ParsePath(string(q.path)); err != nil || p != q.path || q.limit < 1 || q.limit > MaxJobLimit {
			t.Fatalf("%q parsed to %+v", s, q)
		}
	})
}

// FuzzFeedQuery: any query string either parses into a query the store
// accepts (level warning or alert, limit in bounds, a valid path) or is
// bad input.
func FuzzFeedQuery(f *testing.F) {
	for _, s := range []string{
		"", "path=/&level=warning&limit=50", "level=alert&before=12", "limit=1001", "before=0", "path=%2E%2E",
		"path=/a%00", "level=info", "x=1", "limit=1&limit=2", "path=/peers/eu/devices/a&before=18446744073709551615",
		"consistent=true&level=alert",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseFeed(v)
		if err != nil {
			mustBeBadInput(t, err, []byte(raw))
			return
		}
		if _, err := model.ParsePath(string(q.Prefix)); err != nil {
			t.Fatalf("prefix %q: %v", q.Prefix, err)
		}
		if !model.Notable(q.Level) || q.Limit < 1 || q.Limit > model.MaxFeedLimit {
			t.Fatalf("query %+v", q)
		}
	})
}
