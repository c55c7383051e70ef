package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// changeBatch is how many log entries one read of the change stream takes.
const changeBatch = 1024

// changeJSON is the data of one "change" event of the change stream.
type changeJSON struct {
	Seq       uint64                  `json:"seq"`
	Time      time.Time               `json:"time"`
	Op        string                  `json:"op"`
	Path      model.Path              `json:"path"`
	Type      string                  `json:"type,omitempty"`
	Tenant    string                  `json:"tenant,omitempty"`
	Labels    map[string]string       `json:"labels,omitempty"`
	Variables map[string]variableJSON `json:"variables,omitempty"`
	Event     *model.Event            `json:"event,omitempty"`
}

func renderChange(e *model.Entry) changeJSON {
	m := &e.Mutation
	c := changeJSON{
		Seq:    e.Seq,
		Time:   e.Time,
		Op:     m.Op.String(),
		Path:   m.Path,
		Type:   m.Type,
		Tenant: m.Tenant,
		Labels: m.Labels,
	}
	if len(m.Variables) > 0 {
		c.Variables = renderVariables(m.Variables, e.Time)
	}
	if m.Event != nil {
		ev := *m.Event
		ev.Seq = e.Seq
		c.Event = &ev
	}
	return c
}

// changeFilter decides which log entries one stream's caller receives.
type changeFilter struct {
	path model.Path
	p    *auth.Principal
}

func (f *changeFilter) pass(e *model.Entry) bool {
	if e.Local() {
		return false
	}
	m := &e.Mutation
	sees := f.p.SeesTenant(m.Tenant)
	if m.Event != nil {
		sees = seesEvent(f.p, m.Tenant, m.Event.Name)
	}
	return m.Path.Within(f.path) && sees && f.p.Can(auth.RoleViewer, m.Path)
}

// changes serves the live change stream as Server-Sent Events. The stream
// runs on the request's goroutine until the client goes, Shutdown is
// called, the model closes, or the caller's token stops authenticating:
// checked at once whenever auth reports a change of tokens or users
// (auth.Service.Changed), and at every keepalive (expiry).
func (s *Server) changes(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	path := model.Root
	if v := q.Get("path"); v != "" {
		var err error
		if path, err = model.ParsePath(v); err != nil {
			return err
		}
	}
	if full, toward := reach(p, path); !full && !toward {
		return forbidden("following changes under", auth.RoleViewer, path)
	}
	after := s.model.LastSeq() // live only, by default
	cursor, have := r.Header.Get("Last-Event-ID"), true
	if cursor == "" {
		cursor, have = q.Get("after"), q.Has("after")
	}
	if have {
		var err error
		if after, err = strconv.ParseUint(cursor, 10, 64); err != nil {
			return invalidf("Last-Event-ID or after must be a sequence number")
		}
	}

	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		return nil // no stream for a HEAD
	}
	if s.quit.Err() != nil {
		return apiError(http.StatusServiceUnavailable, codeUnavailable, "the node is shutting down")
	}
	if ok, perUser := s.streams.acquire(p.User); !ok {
		w.Header().Set("Retry-After", "5")
		if perUser {
			s.metrics.refuse(refusedStreamsPerUser)
			return apiError(http.StatusTooManyRequests, codeRateLimited,
				"user %q has %d change streams open, the most one user may (close one first)", p.User, s.cfg.MaxStreamsPerUser)
		}
		s.metrics.refuse(refusedStreams)
		return apiError(http.StatusServiceUnavailable, codeUnavailable, "too many change streams (%d)", s.cfg.MaxStreams)
	}
	defer s.streams.release(p.User)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stop := context.AfterFunc(s.quit, cancel)
	defer stop()

	st := &stream{
		s:     s,
		w:     w,
		rc:    http.NewResponseController(w),
		token: tokenOf(r),
		f:     changeFilter{path: path, p: p},
	}
	defer st.rc.SetWriteDeadline(time.Time{}) // the connection may serve more requests
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	st.buf.WriteString(": stream open\n\n")
	if err := st.flush(); err != nil {
		return nil
	}
	st.run(ctx, after)
	return nil
}

func tokenOf(r *http.Request) string {
	t, _ := r.Context().Value(keyToken).(string)
	return t
}

// stream is one open change stream.
type stream struct {
	s     *Server
	w     http.ResponseWriter
	rc    *http.ResponseController
	token string
	f     changeFilter
	buf   bytes.Buffer
}

// run follows the log after the cursor after until the stream ends.
func (st *stream) run(ctx context.Context, after uint64) {
	s := st.s
	log := s.log.With("user", st.f.p.User, "path", st.f.path)
	interval := s.cfg.KeepAlive
	if head := s.model.LastSeq(); after > head {
		// A cursor from the future (another node, or a store restored from
		// a backup): the client's view cannot be trusted.
		if st.reset(head) != nil {
			return
		}
		after = head
	}
	beat := time.Now().Add(interval)
	// Watch from before a fresh check, so that no change made since the
	// request authenticated goes unnoticed.
	authChanged := s.auth.Changed()
	if !st.recheck(ctx, log) {
		return
	}
	for {
		if authChanged.Err() != nil {
			// A token or user changed (maybe this one): authenticate
			// again before sending anything more.
			authChanged = s.auth.Changed()
			if !st.recheck(ctx, log) {
				return
			}
		}
		if wait := time.Until(beat); wait <= 0 {
			if !st.recheck(ctx, log) {
				return
			}
			st.buf.WriteString(": keepalive\n\n")
			if st.flush() != nil {
				return
			}
			beat = time.Now().Add(interval)
			continue
		}
		rctx, rcancel := context.WithDeadline(ctx, beat)
		stopWatch := context.AfterFunc(authChanged, rcancel)
		es, err := s.model.ReadLog(rctx, after, changeBatch)
		stopWatch()
		rcancel()
		if authChanged.Err() != nil {
			// Entries read may be past the change: send them only to
			// the principal as it is now.
			authChanged = s.auth.Changed()
			if !st.recheck(ctx, log) {
				return
			}
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return // client gone or Shutdown
		case errors.Is(err, context.DeadlineExceeded):
			continue // time for a keepalive
		case errors.Is(err, context.Canceled):
			continue // auth changed: rechecked above
		case errors.Is(err, model.ErrCompacted):
			head := s.model.LastSeq()
			log.Debug("change stream cursor compacted away; reset", "after", after, "head", head)
			if st.reset(head) != nil {
				return
			}
			after = head
			continue
		case errors.Is(err, model.ErrClosed):
			return
		default:
			log.Error("change stream: read log", "after", after, "err", err)
			return
		}
		for i := range es {
			e := &es[i]
			after = e.Seq
			if !st.f.pass(e) {
				continue
			}
			data, err := json.Marshal(renderChange(e))
			if err != nil {
				log.Error("change stream: encode change", "seq", e.Seq, "err", err)
				return
			}
			fmt.Fprintf(&st.buf, "id: %d\nevent: change\ndata: %s\n\n", e.Seq, data)
		}
		if st.buf.Len() > 0 && st.flush() != nil {
			return
		}
	}
}

// recheck authenticates the stream's token again; the stream ends when it
// no longer does (revoked, expired, user disabled or deleted). Changed
// grants apply from now on.
func (st *stream) recheck(ctx context.Context, log *slog.Logger) bool {
	p, err := st.s.auth.Authenticate(ctx, st.token)
	if err != nil {
		log.Info("change stream ended: token no longer authenticates", "err", err)
		return false
	}
	st.f.p = p
	return true
}

// reset tells the client that it missed changes and the stream goes on
// from head.
func (st *stream) reset(head uint64) error {
	fmt.Fprintf(&st.buf, "id: %d\nevent: reset\ndata: {\"seq\":%d}\n\n", head, head)
	return st.flush()
}

// flush writes what is buffered and pushes it to the client. A client
// that does not read for two keepalive intervals is dropped.
func (st *stream) flush() error {
	st.rc.SetWriteDeadline(time.Now().Add(2*st.s.cfg.KeepAlive + 5*time.Second))
	_, err := st.w.Write(st.buf.Bytes())
	st.buf.Reset()
	if err != nil {
		return err
	}
	return st.rc.Flush()
}
