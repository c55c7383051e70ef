package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/strata-dm/strata/model"
)

// Calls and reads go down the tree, one QUIC stream each: the consumer
// opens it, writes one request and closes its side; the provider answers
// with one response. Cancelling the stream cancels the request below.

// Auditor is implemented by a Local that also wants to record requests
// this node forwards further down (to a node mounted under it).
type Auditor interface {
	AuditForward(consumer string, id Identity, op string, p model.Path, function string, err error)
}

// Mounted reports whether p lies under the mount of a known provider.
func (s *Service) Mounted(p model.Path) bool {
	name, _, ok := splitMounted(p)
	if !ok {
		return false
	}
	return s.mount(name) != nil
}

func (s *Service) mount(name string) *mount {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mounts[name]
}

// Call routes a function call on a mounted path to the provider owning it.
func (s *Service) Call(ctx context.Context, req CallRequest) (CallResult, error) {
	name, rest, ok := splitMounted(req.Path)
	if !ok {
		return CallResult{}, fmt.Errorf("%w: %s is not a mounted path", model.ErrInvalid, req.Path)
	}
	m, err := s.operateMount(name, "calls need")
	if err != nil {
		return CallResult{}, err
	}
	if f, ok := s.cfg.Local.(CallForwarder); ok {
		if err := f.ForwardCall(ctx, name, req); err != nil {
			return CallResult{}, err
		}
	}
	r := req
	r.Path = rest
	var resp response
	if err := m.request(ctx, request{Op: opCall, Path: rest, Call: &r, Identity: req.Identity}, &resp); err != nil {
		return CallResult{}, err
	}
	if resp.Result == nil {
		return CallResult{}, errors.New("federation: call answered without a result")
	}
	res := *resp.Result
	res.Node = mapPath(m.path, orRoot(res.Node))
	return res, nil
}

func orRoot(p model.Path) model.Path {
	if p == "" {
		return model.Root
	}
	return p
}

// Get reads a mounted context live from the provider owning it.
func (s *Service) Get(ctx context.Context, id Identity, p model.Path) (*model.Context, error) {
	name, rest, ok := splitMounted(p)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a mounted path", model.ErrInvalid, p)
	}
	m := s.mount(name)
	if m == nil {
		return nil, fmt.Errorf("%w: no peer %q", model.ErrNotFound, name)
	}
	var resp response
	if err := m.request(ctx, request{Op: opGet, Path: rest, Identity: id}, &resp); err != nil {
		return nil, err
	}
	if resp.Context == nil {
		return nil, errors.New("federation: read answered without a context")
	}
	c := resp.Context
	c.Path = mapPath(m.path, c.Path)
	return c, nil
}

// HistoryReader is implemented by a Local that keeps the history of the
// variables of its contexts (node/history, through the node): query is
// the read's URL parameters and the answer its points as JSON, both
// opaque to the links. It checks the identity as a live read does.
type HistoryReader interface {
	History(ctx context.Context, consumer string, id Identity, p model.Path, query []byte) ([]byte, error)
}

// History reads the history of a mounted context on the provider that
// owns it (routed on through the tiers below, like a live read): query
// and answer as HistoryReader has them.
func (s *Service) History(ctx context.Context, id Identity, p model.Path, query []byte) ([]byte, error) {
	name, rest, ok := splitMounted(p)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a mounted path", model.ErrInvalid, p)
	}
	m := s.mount(name)
	if m == nil {
		return nil, fmt.Errorf("%w: no peer %q", model.ErrNotFound, name)
	}
	var resp response
	if err := m.request(ctx, request{Op: opHistory, Path: rest, Bulk: query, Identity: id}, &resp); err != nil {
		return nil, err
	}
	if resp.Body == nil {
		return nil, errors.New("federation: history read answered without points")
	}
	return resp.Body, nil
}

// Job reads a job owned by the node at node, a mounted node's path (such
// as /peers/eu/peers/plant7, the "node" of a pending call's answer).
func (s *Service) Job(ctx context.Context, id Identity, node model.Path, jobID string) (CallResult, error) {
	name, rest, ok := splitMounted(node)
	if !ok {
		return CallResult{}, fmt.Errorf("%w: %s is not a mounted node", model.ErrInvalid, node)
	}
	if rest != model.Root {
		if _, _, ok := splitMounted(rest); !ok {
			return CallResult{}, fmt.Errorf("%w: %s is not a node's path (/peers/<name>[/peers/<name>...])", model.ErrInvalid, node)
		}
	}
	m := s.mount(name)
	if m == nil {
		return CallResult{}, fmt.Errorf("%w: no peer %q", model.ErrNotFound, name)
	}
	var resp response
	if err := m.request(ctx, request{Op: opJob, Path: rest, Job: jobID, Identity: id}, &resp); err != nil {
		return CallResult{}, err
	}
	if resp.Result == nil {
		return CallResult{}, errors.New("federation: job read answered without a job")
	}
	res := *resp.Result
	res.Node = mapPath(m.path, orRoot(res.Node))
	return res, nil
}

// Bulk sends a bulk job request (body, opaque here) to provider name,
// for the operator id. The provider takes it only from a consumer it
// granted operate (ErrForbidden otherwise); ErrUnreachable when the link
// is down.
func (s *Service) Bulk(ctx context.Context, name string, id Identity, body []byte) error {
	m, err := s.operateMount(name, "bulk jobs need")
	if err != nil {
		return err
	}
	var resp response
	return m.request(ctx, request{Op: opBulk, Path: model.Root, Bulk: body, Identity: id}, &resp)
}

// AlertActor is implemented by a Local that owns alerts: Alert applies
// an action (body, opaque to the links) to the alert at p, a path of
// this node's, for the operator id, and returns the alert as it is then.
type AlertActor interface {
	Alert(ctx context.Context, consumer string, id Identity, p model.Path, body []byte) ([]byte, error)
}

// Alert routes an action on a mounted alert (body, opaque here) to the
// node that owns it, for the operator id; the links need the operate
// grant. It returns the owner's answer.
func (s *Service) Alert(ctx context.Context, id Identity, p model.Path, body []byte) ([]byte, error) {
	name, rest, ok := splitMounted(p)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a mounted path", model.ErrInvalid, p)
	}
	m, err := s.operateMount(name, "acting on alerts needs")
	if err != nil {
		return nil, err
	}
	var resp response
	if err := m.request(ctx, request{Op: opAlert, Path: rest, Bulk: body, Identity: id}, &resp); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (m *mount) grantHeld() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.grant
}

// request sends one request to the provider and waits for its answer.
func (m *mount) request(ctx context.Context, req request, resp *response) error {
	m.mu.Lock()
	conn, state, since, lastErr := m.conn, m.state, m.since, m.errs.last
	m.mu.Unlock()
	if conn == nil {
		msg := fmt.Sprintf("the link to %s is %s since %s", m.name, state, since.UTC().Format(time.RFC3339))
		if lastErr != "" {
			msg += " (" + lastErr + ")"
		}
		return fmt.Errorf("%w: %s", ErrUnreachable, msg)
	}
	if d, ok := ctx.Deadline(); ok {
		req.Deadline = d.UnixNano()
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, m.name, err)
	}
	fw := newFrameWriter(st)
	if err := fw.write(kindRequest, req); err != nil {
		st.CancelRead(streamCancelled)
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, m.name, err)
	}
	st.Close()
	// The answer is read by a goroutine this call waits for: cancelling
	// the stream ends its read.
	done := make(chan error, 1)
	go func() {
		done <- newFrameReader(st, m.s.cfg.MaxFrame).expect(kindResponse, resp)
	}()
	select {
	case err := <-done:
		if err != nil {
			if conn.Context().Err() != nil {
				return fmt.Errorf("%w: the link to %s dropped during the request", ErrUnreachable, m.name)
			}
			return fmt.Errorf("federation: %s: %w", m.name, err)
		}
	case <-ctx.Done():
		st.CancelRead(streamCancelled)
		st.CancelWrite(streamCancelled)
		<-done
		return ctx.Err()
	}
	return responseError(resp, m.name)
}

// responseError maps a response's code back to the sentinel errors.
func responseError(r *response, peer string) error {
	if r.Code == "" {
		return nil
	}
	var base error
	switch r.Code {
	case codeNotFound:
		base = model.ErrNotFound
	case codeInvalid:
		base = model.ErrInvalid
	case codeForbidden:
		base = ErrForbidden
	case codeUnreachable:
		base = ErrUnreachable
	case codeConflict:
		base = model.ErrConflict
	case codeTimeout:
		base = context.DeadlineExceeded
	default:
		return fmt.Errorf("%s: %s", peer, r.Error)
	}
	return fmt.Errorf("%w: %s: %s", base, peer, r.Error)
}

func errorCode(err error) string {
	switch {
	case errors.Is(err, model.ErrNotFound):
		return codeNotFound
	case errors.Is(err, model.ErrInvalid), errors.Is(err, model.ErrInvalidPath):
		return codeInvalid
	case errors.Is(err, ErrForbidden), errors.Is(err, model.ErrShared):
		return codeForbidden
	case errors.Is(err, ErrUnreachable):
		return codeUnreachable
	case errors.Is(err, model.ErrConflict):
		return codeConflict
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return codeTimeout
	}
	return codeInternal
}

// operateMount returns the mount of provider name, which must have
// granted this node operate: need says what needs it, for the error.
func (s *Service) operateMount(name, need string) (*mount, error) {
	m := s.mount(name)
	if m == nil {
		return nil, fmt.Errorf("%w: no peer %q", model.ErrNotFound, name)
	}
	if g := m.grantHeld(); g != GrantOperate {
		return nil, fmt.Errorf("%w: %s granted this node %q, %s %q", ErrForbidden, name, g, need, GrantOperate)
	}
	return m, nil
}

// needOperate refuses (ErrForbidden, counted) a request of consumer
// holding grant for what needs the operate grant.
func (s *Service) needOperate(consumer, grant, what string) error {
	if grant == GrantOperate {
		return nil
	}
	s.metrics.refused.WithLabelValues("grant").Inc()
	return fmt.Errorf("%w: %s holds %q on this node; %s need %q", ErrForbidden, consumer, grant, what, GrantOperate)
}

// bodyOp answers a request whose answer is an opaque body: forwarded to
// the provider below when the path is mounted here (and audited as
// forwarded), else answered by local.
func (s *Service) bodyOp(consumer string, req request, below bool, forward, local func() ([]byte, error)) response {
	var b []byte
	var err error
	if below {
		b, err = forward()
		if a, ok := s.cfg.Local.(Auditor); ok {
			a.AuditForward(consumer, req.Identity, req.Op, req.Path, "", err)
		}
	} else {
		b, err = local()
	}
	if err != nil {
		return response{Code: errorCode(err), Error: err.Error()}
	}
	return response{Body: b}
}

// readOpening reads the first frame of a stream the peer opened, of kind
// want, into v, within handshakeTimeout; on failure it counts a protocol
// refusal, resets the stream and reports false.
func (s *Service) readOpening(st *quic.Stream, want kind, v any) (*frameWriter, bool) {
	fr := newFrameReader(st, s.cfg.MaxFrame)
	st.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if err := fr.expect(want, v); err != nil {
		s.metrics.refused.WithLabelValues("protocol").Inc()
		st.CancelRead(streamCancelled)
		st.CancelWrite(streamCancelled)
		return nil, false
	}
	st.SetReadDeadline(time.Time{})
	return newFrameWriter(st), true
}

// watchGiveUp calls cancel when the peer ends its side of st other than
// cleanly: it closed it after its request, so anything else means it
// gave up. The returned stop ends the watch (cancelling st's read) and
// waits for it.
func watchGiveUp(st *quic.Stream, cancel func()) (stop func()) {
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		var b [1]byte
		if _, err := st.Read(b[:]); !errors.Is(err, io.EOF) {
			cancel()
		}
	}()
	return func() {
		st.CancelRead(streamCancelled)
		<-watched
	}
}

// serveRequests answers the consumer's requests on this connection, one
// goroutine each; it returns when the connection has ended and every
// request handler with it.
func (u *upstream) serveRequests(conn *quic.Conn, consumer, grant string, subtrees []model.Path) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.serveRequest(conn, st, consumer, grant, subtrees)
		}()
	}
}

func (u *upstream) serveRequest(conn *quic.Conn, st *quic.Stream, consumer, grant string, subtrees []model.Path) {
	s := u.s
	defer st.Close()
	var req request
	fw, ok := s.readOpening(st, kindRequest, &req)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(conn.Context())
	defer cancel()
	if req.Deadline > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithDeadline(ctx, time.Unix(0, req.Deadline))
		defer c2()
	}
	defer watchGiveUp(st, cancel)()
	req.Identity.Via = append(slices.Clone(req.Identity.Via), consumer)
	resp := u.handle(ctx, consumer, grant, subtrees, req)
	if err := fw.write(kindResponse, resp); err != nil {
		s.log.Debug("federation: could not answer a request", "consumer", consumer, "err", err)
	}
}

func (u *upstream) handle(ctx context.Context, consumer, grant string, subtrees []model.Path, req request) response {
	s := u.s
	fail := func(err error) response {
		return response{Code: errorCode(err), Error: err.Error()}
	}
	if _, err := model.ParsePath(string(req.Path)); err != nil {
		return fail(fmt.Errorf("%w: %v", model.ErrInvalid, err))
	}
	if req.Op != opDigest && req.Op != opJob && req.Op != opBulk && req.Op != opRelease && req.Op != opInfo && !within(req.Path, subtrees) {
		return fail(fmt.Errorf("%w: %s is not published to %s", model.ErrNotFound, req.Path, consumer))
	}
	_, _, below := splitMounted(req.Path)
	below = below && s.Mounted(req.Path)
	switch req.Op {
	case opCall:
		if grant != GrantOperate || req.Call == nil {
			s.metrics.refused.WithLabelValues("grant").Inc()
			return fail(fmt.Errorf("%w: %s holds %q on this node; calls need %q", ErrForbidden, consumer, grant, GrantOperate))
		}
		call := *req.Call
		call.Path, call.Identity = req.Path, req.Identity
		var res CallResult
		var err error
		if below {
			res, err = s.Call(ctx, call)
			if a, ok := s.cfg.Local.(Auditor); ok {
				a.AuditForward(consumer, req.Identity, opCall, req.Path, call.Function, err)
			}
		} else if s.cfg.Local == nil {
			err = fmt.Errorf("%w: this node serves no calls", model.ErrNotFound)
		} else {
			res, err = s.cfg.Local.Call(ctx, consumer, call)
		}
		if err != nil {
			return fail(err)
		}
		return response{Result: &res}
	case opGet:
		var c *model.Context
		var err error
		if below {
			c, err = s.Get(ctx, req.Identity, req.Path)
			if a, ok := s.cfg.Local.(Auditor); ok {
				a.AuditForward(consumer, req.Identity, opGet, req.Path, "", err)
			}
		} else if s.cfg.Local == nil {
			err = fmt.Errorf("%w: this node serves no reads", model.ErrNotFound)
		} else {
			c, err = s.cfg.Local.Get(ctx, consumer, req.Identity, req.Path)
		}
		if err != nil {
			return fail(err)
		}
		return response{Context: c}
	case opHistory:
		return s.bodyOp(consumer, req, below, func() ([]byte, error) {
			return s.History(ctx, req.Identity, req.Path, req.Bulk)
		}, func() ([]byte, error) {
			hr, ok := s.cfg.Local.(HistoryReader)
			if !ok {
				return nil, fmt.Errorf("%w: this node keeps no history", model.ErrNotFound)
			}
			return hr.History(ctx, consumer, req.Identity, req.Path, req.Bulk)
		})
	case opJob:
		var res CallResult
		var err error
		switch {
		case req.Path == model.Root:
			jr, ok := s.cfg.Local.(JobReader)
			if !ok {
				return fail(fmt.Errorf("%w: this node serves no jobs", model.ErrNotFound))
			}
			if res, err = jr.Job(ctx, consumer, req.Identity, req.Job); err == nil && !within(res.Path, subtrees) {
				err = fmt.Errorf("%w: job %s", model.ErrNotFound, req.Job)
			}
		case below && within(req.Path, subtrees):
			res, err = s.Job(ctx, req.Identity, req.Path, req.Job)
			if a, ok := s.cfg.Local.(Auditor); ok {
				a.AuditForward(consumer, req.Identity, opJob, req.Path, "", err)
			}
		default:
			err = fmt.Errorf("%w: %s is not a node's path", model.ErrNotFound, req.Path)
		}
		if err != nil {
			return fail(err)
		}
		return response{Result: &res}
	case opBulk:
		if err := s.needOperate(consumer, grant, "bulk jobs"); err != nil {
			return fail(err)
		}
		br, ok := s.cfg.Local.(BulkReceiver)
		if !ok {
			return fail(fmt.Errorf("%w: this node runs no bulk jobs", model.ErrNotFound))
		}
		if err := br.Bulk(ctx, consumer, req.Identity, slices.Clone(subtrees), req.Bulk); err != nil {
			return fail(err)
		}
		return response{}
	case opRelease:
		if err := s.needOperate(consumer, grant, "sending releases"); err != nil {
			return fail(err)
		}
		rr, ok := s.cfg.Local.(ReleaseReceiver)
		if !ok {
			return fail(fmt.Errorf("%w: this node takes no releases", model.ErrNotFound))
		}
		if err := rr.Release(ctx, consumer, req.Identity, req.Bulk); err != nil {
			return fail(err)
		}
		return response{}
	case opInfo:
		in, ok := s.cfg.Local.(Informer)
		if !ok {
			return fail(fmt.Errorf("%w: this node gives no reports", model.ErrNotFound))
		}
		b, err := in.Info(ctx, consumer, req.Identity, req.Job)
		if err != nil {
			return fail(err)
		}
		return response{Body: b}
	case opAlert:
		if err := s.needOperate(consumer, grant, "acting on alerts"); err != nil {
			return fail(err)
		}
		return s.bodyOp(consumer, req, below, func() ([]byte, error) {
			return s.Alert(ctx, req.Identity, req.Path, req.Bulk)
		}, func() ([]byte, error) {
			aa, ok := s.cfg.Local.(AlertActor)
			if !ok {
				return nil, fmt.Errorf("%w: this node keeps no alerts", model.ErrNotFound)
			}
			return aa.Alert(ctx, consumer, req.Identity, req.Path, req.Bulk)
		})
	case opDigest:
		d, err := sourceDigest(ctx, s.model, subtrees, req.At)
		if err != nil {
			return fail(err)
		}
		return response{Digest: &d}
	}
	return fail(fmt.Errorf("%w: unknown request %q", model.ErrInvalid, req.Op))
}
