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
	"golang.org/x/time/rate"

	"github.com/strata-dm/strata/model"
)

// Artifacts over links (docs/software.md): a provider fetches an
// artifact's bytes from the consumer it came from on a fetch stream of
// its own, opened after the sync stream. The provider sends one fetch
// frame (the SHA-256 and the offset it has), the consumer answers one
// fetch-head frame (an error, or the artifact's whole size) followed by
// the raw bytes from the offset to the end. What may be fetched is the
// consumer's to decide (ArtifactServer): the links carry bytes.
//
// Releases travel the other way as a request (opRelease, consumer to
// provider), opaque here like bulk jobs (ReleaseReceiver).

// FeatureFetch is announced in the welcome by a consumer that serves
// fetch streams.
const FeatureFetch = "fetch"

// fetchHeadTimeout bounds the wait for a fetch's head: the consumer may
// first fetch the artifact from its own consumer.
const fetchHeadTimeout = 10 * time.Minute

type fetchReq struct {
	SHA256 string `cbor:"1,keyasint"`
	Offset int64  `cbor:"2,keyasint,omitempty"`
}

type fetchHead struct {
	Code  string `cbor:"1,keyasint,omitempty"`
	Error string `cbor:"2,keyasint,omitempty"`
	// Size is the artifact's whole size; the bytes from the request's
	// offset to Size follow the frame.
	Size int64 `cbor:"3,keyasint,omitempty"`
}

// ArtifactServer is implemented by a Local whose providers may fetch
// artifacts: OpenArtifact returns the bytes of artifact sum from offset,
// and its whole size, if provider may have it; model.ErrNotFound
// otherwise (whatever the node holds). It may first fetch the artifact
// from above.
type ArtifactServer interface {
	OpenArtifact(ctx context.Context, provider, sum string, offset int64) (io.ReadCloser, int64, error)
}

// ReleaseReceiver is implemented by a Local that takes releases from its
// consumers (node/releases): body is the sender's request, opaque to the
// links. Only a consumer granted operate reaches it.
type ReleaseReceiver interface {
	Release(ctx context.Context, consumer string, id Identity, body []byte) error
}

// Informer is implemented by a Local that reports on itself to its
// consumers (e.g. its artifact cache): Info returns report what, as the
// identity may see it, opaque to the links.
type Informer interface {
	Info(ctx context.Context, consumer string, id Identity, what string) ([]byte, error)
}

// Info asks provider name for its report what, for the operator id.
func (s *Service) Info(ctx context.Context, name string, id Identity, what string) ([]byte, error) {
	m := s.mount(name)
	if m == nil {
		return nil, fmt.Errorf("%w: no peer %q", model.ErrNotFound, name)
	}
	var resp response
	if err := m.request(ctx, request{Op: opInfo, Path: model.Root, Job: what, Identity: id}, &resp); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// CallForwarder is implemented by a Local that sees each call before it
// is routed to the provider below that owns its path (here or from a
// consumer: call.Identity.Via then ends with that consumer); an error
// stops the call.
type CallForwarder interface {
	ForwardCall(ctx context.Context, provider string, call CallRequest) error
}

// Window is a daily time range, in the node's local time, in which a
// link may fetch artifacts: From and To are offsets from midnight; a
// window with To before From spans midnight.
type Window struct {
	From, To time.Duration
}

func (w Window) contains(t time.Time) bool {
	y, m, d := t.Date()
	at := t.Sub(time.Date(y, m, d, 0, 0, 0, 0, t.Location()))
	if w.From <= w.To {
		return at >= w.From && at < w.To
	}
	return at >= w.From || at < w.To
}

// untilOpen returns how long until one of ws is open at t (0: open now;
// ws empty: always open).
func untilOpen(ws []Window, t time.Time) time.Duration {
	if len(ws) == 0 {
		return 0
	}
	best := 24 * time.Hour
	for _, w := range ws {
		if w.contains(t) {
			return 0
		}
		y, m, d := t.Date()
		start := time.Date(y, m, d, 0, 0, 0, 0, t.Location()).Add(w.From)
		if !start.After(t) {
			start = start.AddDate(0, 0, 1)
		}
		best = min(best, start.Sub(t))
	}
	return best
}

// Release sends a release request (body, opaque here) to provider name
// for the operator id. The provider takes it only from a consumer it
// granted operate.
func (s *Service) Release(ctx context.Context, name string, id Identity, body []byte) error {
	m, err := s.operateMount(name, "sending releases needs")
	if err != nil {
		return err
	}
	var resp response
	return m.request(ctx, request{Op: opRelease, Path: model.Root, Bulk: body, Identity: id}, &resp)
}

// serveFetches answers the provider's fetch streams on conn until it
// ends, one goroutine each (QUIC's stream limit bounds them).
func (m *mount) serveFetches(conn *quic.Conn) {
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
			m.serveFetch(conn, st)
		}()
	}
}

func (m *mount) serveFetch(conn *quic.Conn, st *quic.Stream) {
	s := m.s
	defer st.Close()
	var req fetchReq
	fw, ok := s.readOpening(st, kindFetch, &req)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(conn.Context())
	defer cancel()
	defer watchGiveUp(st, cancel)()
	fail := func(err error) {
		fw.write(kindFetchHead, fetchHead{Code: errorCode(err), Error: err.Error()})
	}
	as, ok := s.cfg.Local.(ArtifactServer)
	if !ok {
		fail(fmt.Errorf("%w: this node serves no artifacts", model.ErrNotFound))
		return
	}
	rc, size, err := as.OpenArtifact(ctx, m.name, req.SHA256, req.Offset)
	if err != nil {
		s.metrics.fetches.WithLabelValues(m.name, "refused").Inc()
		fail(err)
		return
	}
	defer rc.Close()
	if err := fw.write(kindFetchHead, fetchHead{Size: size}); err != nil {
		return
	}
	n, err := io.Copy(st, rc)
	s.metrics.artifactBytes.WithLabelValues(m.name, "provider").Add(float64(n))
	if err != nil {
		s.metrics.fetches.WithLabelValues(m.name, "failed").Inc()
		st.CancelWrite(streamCancelled)
		s.log.Debug("federation: artifact fetch ended early", "peer", m.name, "sha256", req.SHA256, "sent", n, "err", err)
		return
	}
	s.metrics.fetches.WithLabelValues(m.name, "served").Inc()
}

// Fetch opens artifact sum from offset on the link to the consumer named
// consumer: it returns the bytes from offset to the end and the
// artifact's whole size. The bytes are read at the link's bandwidth and
// only within its transfer windows (Upstream.Bandwidth, Windows): a read
// outside them waits. ErrUnreachable when the link is down (or there is
// none to consumer) or the consumer serves no fetches.
func (s *Service) Fetch(ctx context.Context, consumer, sum string, offset int64) (io.ReadCloser, int64, error) {
	var u *upstream
	s.mu.Lock()
	for _, x := range s.upstreams {
		x.mu.Lock()
		if x.consumer == consumer && (u == nil || x.conn != nil) {
			u = x
		}
		x.mu.Unlock()
	}
	s.mu.Unlock()
	if u == nil {
		// Before a link's first connection its consumer's name is not
		// known yet: as unreachable as a link that is down.
		return nil, 0, fmt.Errorf("%w: no link to %q is connected", ErrUnreachable, consumer)
	}
	return u.fetch(ctx, sum, offset)
}

func (u *upstream) fetch(ctx context.Context, sum string, offset int64) (io.ReadCloser, int64, error) {
	s := u.s
	if err := u.waitWindow(ctx); err != nil {
		return nil, 0, err
	}
	u.mu.Lock()
	conn, features, name := u.conn, u.features, u.consumer
	u.mu.Unlock()
	if conn == nil {
		return nil, 0, fmt.Errorf("%w: the link to %s is down", ErrUnreachable, name)
	}
	if !slices.Contains(features, FeatureFetch) {
		return nil, 0, fmt.Errorf("%w: %s serves no artifacts (an older version)", ErrUnreachable, name)
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, fmt.Errorf("%w: %s: %v", ErrUnreachable, name, err)
	}
	fw := newFrameWriter(st)
	if err := fw.write(kindFetch, fetchReq{SHA256: sum, Offset: offset}); err != nil {
		st.CancelRead(streamCancelled)
		return nil, 0, fmt.Errorf("%w: %s: %v", ErrUnreachable, name, err)
	}
	st.Close()
	fr := newFrameReader(st, s.cfg.MaxFrame)
	stop := onDone(ctx, func() { st.CancelRead(streamCancelled) })
	st.SetReadDeadline(time.Now().Add(fetchHeadTimeout))
	var head fetchHead
	err = fr.expect(kindFetchHead, &head)
	st.SetReadDeadline(time.Time{})
	stop()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		st.CancelRead(streamCancelled)
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		if conn.Context().Err() != nil {
			return nil, 0, fmt.Errorf("%w: the link to %s dropped during the fetch", ErrUnreachable, name)
		}
		return nil, 0, fmt.Errorf("federation: %s: fetch: %w", name, err)
	}
	if err := responseError(&response{Code: head.Code, Error: head.Error}, name); err != nil {
		st.CancelRead(streamCancelled)
		return nil, 0, err
	}
	if head.Size < offset {
		st.CancelRead(streamCancelled)
		return nil, 0, fmt.Errorf("%w: %s: artifact %s has %d bytes, fewer than the offset %d", model.ErrInvalid, name, sum, head.Size, offset)
	}
	return &fetchBody{u: u, name: name, ctx: ctx, st: st, r: io.LimitReader(fr.r, head.Size-offset), stop: onDone(ctx, func() { st.CancelRead(streamCancelled) })}, head.Size, nil
}

// waitWindow waits until one of the link's transfer windows is open.
func (u *upstream) waitWindow(ctx context.Context) error {
	for {
		d := untilOpen(u.cfg.Windows, u.s.clock.Now())
		if d == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-u.s.clock.After(min(d, time.Minute)):
		}
	}
}

// fetchBody is a fetch's bytes as they arrive, within the link's
// bandwidth and windows.
type fetchBody struct {
	u    *upstream
	name string // the consumer's
	ctx  context.Context
	st   *quic.Stream
	r    io.Reader
	stop func()
	once sync.Once
}

func (b *fetchBody) Read(p []byte) (int, error) {
	lim := b.u.limiter
	if lim != nil && len(p) > lim.Burst() {
		p = p[:lim.Burst()]
	}
	if err := b.u.waitWindow(b.ctx); err != nil {
		return 0, err
	}
	n, err := b.r.Read(p)
	if n > 0 {
		b.u.s.metrics.artifactBytes.WithLabelValues(b.name, "consumer").Add(float64(n))
		if lim != nil {
			if werr := lim.WaitN(b.ctx, n); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if errors.Is(err, io.EOF) {
		return n, io.EOF
	}
	if err != nil && b.ctx.Err() != nil {
		err = b.ctx.Err()
	}
	return n, err
}

func (b *fetchBody) Close() error {
	b.once.Do(func() {
		b.stop()
		b.st.CancelRead(streamCancelled)
	})
	return nil
}

// newLimiter returns the link's bandwidth limiter (nil: unlimited).
func newLimiter(bytesPerSecond int64) *rate.Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	burst := int(min(max(bytesPerSecond/10, 16<<10), 1<<20))
	return rate.NewLimiter(rate.Limit(bytesPerSecond), burst)
}
