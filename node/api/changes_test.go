package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// sseEvent is one event or comment read from a change stream.
type sseEvent struct {
	id, typ, data string
	comment       string
}

type sseConn struct {
	t      testing.TB
	res    *http.Response
	rd     *bufio.Reader
	cancel context.CancelFunc
}

// openChanges opens a change stream; it fails the test unless the server
// answers 200 with an event stream.
func (e *env) openChanges(token, query string, hdr ...string) *sseConn {
	e.t.Helper()
	c, r := e.tryChanges(token, query, hdr...)
	if c == nil {
		e.t.Fatalf("change stream refused: %d %s", r.status, r.body)
	}
	return c
}

// tryChanges opens a change stream, or returns the refusal.
func (e *env) tryChanges(token, query string, hdr ...string) (*sseConn, resp) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	req, err := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/changes"+query, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	if res.StatusCode != 200 {
		defer cancel()
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return nil, resp{status: res.StatusCode, header: res.Header, body: body}
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Fatalf("content type %q", ct)
	}
	c := &sseConn{t: e.t, res: res, rd: bufio.NewReader(res.Body), cancel: cancel}
	e.t.Cleanup(c.close)
	return c, resp{status: 200}
}

func (c *sseConn) close() {
	c.cancel()
	c.res.Body.Close()
}

// next reads the next event or comment; io.EOF when the server ended the
// stream.
func (c *sseConn) next() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := c.rd.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if ev.comment != "" || ev.typ != "" || ev.data != "" {
				return ev, nil
			}
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.comment = value
		case "id":
			ev.id = value
		case "event":
			ev.typ = value
		case "data":
			ev.data = value
		}
	}
}

// change reads up to the next change or reset event, skipping comments.
func (c *sseConn) change() (sseEvent, changeJSON) {
	c.t.Helper()
	for {
		ev, err := c.next()
		if err != nil {
			c.t.Fatalf("change stream: %v", err)
		}
		if ev.comment != "" {
			continue
		}
		var ch changeJSON
		if ev.typ == "change" {
			if err := json.Unmarshal([]byte(ev.data), &ch); err != nil {
				c.t.Fatalf("change data %q: %v", ev.data, err)
			}
			if ev.id != strconv.FormatUint(ch.Seq, 10) {
				c.t.Fatalf("id %s for seq %d", ev.id, ch.Seq)
			}
		}
		return ev, ch
	}
}

// ended waits for the server to end the stream.
func (c *sseConn) ended() {
	c.t.Helper()
	for {
		_, err := c.next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return
		}
		if err != nil {
			c.t.Fatalf("stream failed instead of ending: %v", err)
		}
	}
}

func TestChangesLive(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	alice := e.openChanges(c.alice, "?path=/devices")
	bob := e.openChanges(c.bob, "")

	e.want(e.do("PUT", "/api/v1/contexts/devices/a", c.alice, `{"type":"device","labels":{"site":"n"},"variables":{"temp":21.5}}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/b", c.bob, `{"type":"device"}`), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/sites/x", c.alice, `{}`), 201, "")
	e.want(e.do("POST", "/api/v1/events/devices/a", c.alice, `{"level":"alert","name":"hot","payload":{"t":99}}`), 201, "")
	e.user(auth.UserSpec{Name: "newbie", Tenant: "acme"}) // records: never streamed
	e.want(e.do("DELETE", "/api/v1/contexts/devices/a", c.alice, nil), 204, "")

	// (/devices is a shared folder made before the stream opened.)
	_, ch := alice.change()
	if ch.Op != "put" || ch.Path != "/devices/a" || ch.Tenant != "acme" || ch.Labels["site"] != "n" ||
		string(ch.Variables["temp"].Value) != "21.5" || ch.Variables["temp"].Type != model.TypeNumber || ch.Time.IsZero() {
		t.Fatalf("2: %+v", ch)
	}
	_, ch = alice.change()
	if ch.Op != "event" || ch.Path != "/devices/a" || ch.Event == nil || ch.Event.Name != "hot" || ch.Event.Seq != ch.Seq ||
		string(ch.Event.Payload) != `{"t":99}` {
		t.Fatalf("3: %+v", ch)
	}
	_, ch = alice.change()
	if ch.Op != "delete" || ch.Path != "/devices/a" || ch.Tenant != "acme" {
		t.Fatalf("4: %+v", ch)
	}

	// Bob sees his own context, nothing of acme's (the shared folders
	// were made before the stream opened).
	want := []string{"put /devices/b"}
	for _, w := range want {
		_, ch := bob.change()
		if got := ch.Op + " " + string(ch.Path); got != w {
			t.Fatalf("bob got %s (%+v), want %s", got, ch, w)
		}
	}
	// A marker: the next change bob gets is his own, so nothing of acme's
	// came between.
	e.want(e.do("PUT", "/api/v1/contexts/devices/b", c.bob, `{"labels":{"m":"1"}}`), 200, "")
	if _, ch := bob.change(); ch.Path != "/devices/b" || ch.Labels["m"] != "1" {
		t.Fatalf("bob's marker: %+v", ch)
	}

	for _, q := range []string{"?after=x", "?after=-1", "?path=/a/../b"} {
		_, r := e.tryChanges(c.alice, q)
		e.want(r, 400, codeInvalid)
	}
	_, r := e.tryChanges(c.alice, "", "Last-Event-ID", "nope")
	e.want(r, 400, codeInvalid)
	_, r = e.tryChanges(c.vera, "?path=/sites")
	e.want(r, 403, codeForbidden)
}

func TestChangesResume(t *testing.T) {
	e := newEnv(t)
	c := e.tenants()
	var seqs []uint64
	for i := range 3 {
		r := e.do("PUT", fmt.Sprintf("/api/v1/contexts/devices/d%d", i), c.alice, `{}`)
		e.want(r, 201, "")
		var x contextJSON
		r.json(t, &x)
		seqs = append(seqs, x.Version)
	}
	// Last-Event-ID wins over after.
	s := e.openChanges(c.alice, "?path=/devices&after=0", "Last-Event-ID", strconv.FormatUint(seqs[0], 10))
	for _, want := range []string{"/devices/d1", "/devices/d2"} {
		if _, ch := s.change(); string(ch.Path) != want {
			t.Fatalf("resumed with %+v, want %s", ch, want)
		}
	}
	// after alone.
	s = e.openChanges(c.alice, "?path=/devices&after="+strconv.FormatUint(seqs[1], 10))
	if _, ch := s.change(); ch.Path != "/devices/d2" {
		t.Fatalf("after: %+v", ch)
	}
	// after=0: everything the log keeps, from the start.
	s = e.openChanges(c.bob, "?after=0")
	if _, ch := s.change(); ch.Path != "/devices" {
		t.Fatalf("from the start: %+v", ch)
	}
	// No cursor: live only.
	s = e.openChanges(c.alice, "")
	e.want(e.do("PUT", "/api/v1/contexts/devices/live", c.alice, `{}`), 201, "")
	if _, ch := s.change(); ch.Path != "/devices/live" {
		t.Fatalf("live: %+v", ch)
	}
	// A cursor from the future resets to the head.
	head := e.model.LastSeq()
	s = e.openChanges(c.alice, "?after=999999")
	ev, _ := s.change()
	if ev.typ != "reset" || ev.data != fmt.Sprintf(`{"seq":%d}`, head) || ev.id != strconv.FormatUint(head, 10) {
		t.Fatalf("future cursor: %+v", ev)
	}
}

func TestChangesReset(t *testing.T) {
	e := newEnv(t, func(_ *Config, _ *auth.Config, m *model.Config) { m.TailSize = 2 })
	c := e.tenants()
	for i := range 10 {
		e.want(e.do("PUT", fmt.Sprintf("/api/v1/contexts/devices/d%d", i), c.alice, `{}`), 201, "")
	}
	if n, err := e.store.CompactLog(3); err != nil || n == 0 {
		t.Fatalf("compact: %d, %v", n, err)
	}
	head := e.model.LastSeq()
	s := e.openChanges(c.alice, "", "Last-Event-ID", "1")
	ev, _ := s.change()
	if ev.typ != "reset" || ev.data != fmt.Sprintf(`{"seq":%d}`, head) {
		t.Fatalf("want a reset to %d, got %+v", head, ev)
	}
	e.want(e.do("PUT", "/api/v1/contexts/devices/after-reset", c.alice, `{}`), 201, "")
	if ev, ch := s.change(); ev.typ != "change" || ch.Path != "/devices/after-reset" || ch.Seq != head+1 {
		t.Fatalf("after the reset: %+v %+v", ev, ch)
	}
}

func TestChangesKeepaliveAndRevocation(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.KeepAlive = 20 * time.Millisecond })
	c := e.tenants()
	s := e.openChanges(c.alice, "")
	for {
		ev, err := s.next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.comment == "keepalive" {
			break
		}
	}
	// Revoking the token ends the stream at the next keepalive.
	p := e.principal(c.alice)
	if err := e.auth.RevokeToken(e.ctx, p, p.TokenID); err != nil {
		t.Fatal(err)
	}
	s.ended()
	tstest.WaitFor(t, tstest.DefaultTimeout, "the stream count to drop", func() bool { return e.api.streams.held() == 0 })
}

func TestChangesShutdownAndLimit(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.MaxStreams = 2 })
	c := e.tenants()
	s1 := e.openChanges(c.alice, "")
	e.openChanges(c.bob, "")
	_, r := e.tryChanges(c.alice, "")
	e.want(r, 503, codeUnavailable)
	s1.close()
	tstest.WaitFor(t, tstest.DefaultTimeout, "a stream slot", func() bool { return e.api.streams.held() == 1 })
	s3 := e.openChanges(c.alice, "")

	m := e.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(m.body), "strata_api_sse_streams 2") {
		t.Fatalf("metrics: %s", m.body)
	}
	e.api.Shutdown()
	s3.ended()
	_, r = e.tryChanges(c.alice, "")
	e.want(r, 503, codeUnavailable)
	tstest.WaitFor(t, tstest.DefaultTimeout, "all streams to end", func() bool { return e.api.streams.held() == 0 })
	// Other requests still work.
	e.want(e.do("GET", "/api/v1/whoami", c.alice, nil), 200, "")
}

// A stream ends as soon as its token stops authenticating, without
// waiting for a keepalive (an hour here): revoked token, deleted or
// disabled user.
func TestChangesEndAtOnceOnRevocation(t *testing.T) {
	for _, tc := range []struct {
		name string
		do   func(e *env, token string) error
	}{
		{"revoked token", func(e *env, token string) error {
			p := e.principal(token)
			return e.auth.RevokeToken(e.ctx, p, p.TokenID)
		}},
		{"deleted user", func(e *env, token string) error {
			return e.auth.DeleteUser(e.ctx, e.principal(e.admin), e.principal(token).User)
		}},
		{"disabled user", func(e *env, token string) error {
			yes := true
			_, err := e.auth.UpdateUser(e.ctx, e.principal(e.admin), e.principal(token).User, auth.UserUpdate{Disabled: &yes})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.KeepAlive = time.Hour })
			c := e.tenants()
			s := e.openChanges(c.alice, "")
			other := e.openChanges(c.bob, "")
			if ev, err := s.next(); err != nil || ev.comment != "stream open" {
				t.Fatalf("first line: %+v %v", ev, err)
			}
			if err := tc.do(e, c.alice); err != nil {
				t.Fatal(err)
			}
			s.ended()
			tstest.WaitFor(t, tstest.DefaultTimeout, "alice's stream slot", func() bool { return e.api.streams.heldBy("alice") == 0 })
			// Another user's stream goes on.
			e.want(e.do("PUT", "/api/v1/contexts/devices/after", c.bob, map[string]any{"type": "device"}), 201, "")
			for {
				ev, ch := other.change()
				if ev.typ != "change" {
					t.Fatalf("bob's stream after alice's revocation: %+v", ev)
				}
				if ch.Path == "/devices/after" {
					break
				}
			}
		})
	}
}

// Changed grants apply to an open stream from the change on, not from the
// next keepalive.
func TestChangesGrantChangeAppliesAtOnce(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.KeepAlive = time.Hour })
	c := e.tenants()
	e.sharedFolders("/other")
	e.want(e.do("PUT", "/api/v1/contexts/devices/d1", c.alice, map[string]any{"type": "device"}), 201, "")
	e.want(e.do("PUT", "/api/v1/contexts/other/o1", c.alice, map[string]any{"type": "device"}), 201, "")
	s := e.openChanges(c.vera, "") // viewer on /devices
	grants := []auth.Grant{{Role: auth.RoleViewer, Subtree: "/other"}}
	if _, err := e.auth.UpdateUser(e.ctx, e.principal(e.admin), "vera", auth.UserUpdate{Grants: &grants}); err != nil {
		t.Fatal(err)
	}
	// Both writes follow the change: only the one under /other reaches vera.
	e.want(e.do("PUT", "/api/v1/contexts/devices/d1", c.alice, map[string]any{"labels": map[string]string{"a": "1"}}), 200, "")
	e.want(e.do("PUT", "/api/v1/contexts/other/o1", c.alice, map[string]any{"labels": map[string]string{"a": "1"}}), 200, "")
	if ev, ch := s.change(); ev.typ != "change" || ch.Path != "/other/o1" {
		t.Fatalf("first change after the grant change: %+v %+v", ev, ch)
	}
}

// One user holds at most MaxStreamsPerUser streams (429); others still
// get theirs.
func TestChangesPerUserLimit(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.MaxStreamsPerUser = 2 })
	c := e.tenants()
	s1 := e.openChanges(c.vera, "")
	e.openChanges(c.vera, "")
	_, r := e.tryChanges(c.vera, "")
	e.want(r, http.StatusTooManyRequests, codeRateLimited)
	if !strings.Contains(string(r.body), "vera") || r.header.Get("Retry-After") == "" {
		t.Fatalf("refusal: %s %v", r.body, r.header)
	}
	e.openChanges(c.alice, "")
	e.openChanges(c.bob, "")
	s1.close()
	tstest.WaitFor(t, tstest.DefaultTimeout, "a slot of vera's", func() bool { return e.api.streams.heldBy("vera") == 1 })
	e.openChanges(c.vera, "")
	if n := e.refused(refusedStreamsPerUser); n != "1" {
		t.Fatalf("strata_api_refused_total{reason=streams_per_user} = %s", n)
	}
}
