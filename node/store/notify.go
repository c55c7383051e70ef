package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/model"
)

// Change-log notifications. Every Commit that appends to the log also runs
// pg_notify(LogChannel, last sequence number) in its transaction, so the
// notification is delivered exactly when the entries become visible, and
// never for a commit that rolled back. Another process on the same
// database (a replica of the tier serving reads, a federation link) learns
// of new entries from WaitLog without polling.
//
// WaitLog is served by one listening connection per store, outside the
// pool, opened by the first WaitLog and owned by the store (a goroutine
// that Close stops and waits for). The connection LISTENs, then reads the
// log's last sequence number once: whatever was committed before LISTEN
// took effect is seen by that read, whatever after by a notification, so
// no commit is missed (the lost-wakeup race). When the connection drops it
// is opened again with backoff, and the same LISTEN-then-read closes the
// gap of the outage. An idle connection is pinged now and then, so one
// that died silently (a network partition) is noticed too.

// LogChannel is the PostgreSQL notification channel of the change log; the
// payload is the last committed sequence number, in decimal.
const LogChannel = "strata_log"

const (
	listenIdlePing   = 30 * time.Second       // ping an idle listening connection this often
	listenPingWait   = 5 * time.Second        // and give up on it after this long
	listenBackoffMin = 100 * time.Millisecond // first reconnect delay
	listenBackoffMax = 5 * time.Second        // longest reconnect delay
	listenerAppName  = "strata log listener"
)

// logListener tracks the highest log sequence number known to be
// committed, fed by the listening connection and by this store's commits.
type logListener struct {
	mu sync.Mutex
	// started and closed order the listener's start and Close: a WaitLog
	// racing Close never starts a goroutine Close would not wait for.
	started, closed bool
	seen            uint64
	changed         chan struct{} // closed and replaced when seen rises
	conns           uint64        // listening connections established, for tests
}

func newLogListener() *logListener {
	return &logListener{changed: make(chan struct{})}
}

// advance raises seen to seq and wakes the waiters if it rose.
func (l *logListener) advance(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq <= l.seen {
		return
	}
	l.seen = seq
	close(l.changed)
	l.changed = make(chan struct{})
}

// close keeps the listener from starting; the caller then waits for a
// listener already started.
func (l *logListener) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
}

func (l *logListener) state() (seen uint64, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen, l.changed
}

// WaitLog returns the log's last sequence number once it exceeds after:
// at once if it already does, else when a commit through any process on
// this database takes it beyond. It fails with ctx's error when ctx ends
// first, and with model.ErrClosed once the store is closed. While the listening
// connection is down, WaitLog waits for it to come back (and then sees
// what was committed meanwhile).
func (s *Postgres) WaitLog(ctx context.Context, after uint64) (uint64, error) {
	l := s.listen
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return 0, model.ErrClosed
	}
	if !l.started {
		l.started = true
		s.wg.Add(1)
		go s.runListener()
	}
	l.mu.Unlock()
	for {
		seen, changed := l.state()
		if seen > after {
			return seen, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-s.ctx.Done():
			return 0, model.ErrClosed
		}
	}
}

// runListener keeps a listening connection until the store closes.
func (s *Postgres) runListener() {
	defer s.wg.Done()
	backoff := listenBackoffMin
	for {
		established, err := s.listenOnce()
		if s.ctx.Err() != nil {
			return
		}
		if established {
			backoff = listenBackoffMin // it worked for a while: retry promptly
		}
		s.log.Warn("change-log listener: connection lost, reconnecting", "err", err, "in", backoff)
		// Jitter spreads the reconnects of many processes after a
		// primary restart.
		wait := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listenOnce opens a connection, LISTENs, reads the last sequence number
// and then follows notifications until the connection fails or the store
// closes. established reports whether it got as far as listening.
func (s *Postgres) listenOnce() (established bool, err error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = listenerAppName // visible in pg_stat_activity
	}
	cctx, cancel := context.WithTimeout(s.ctx, listenPingWait)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(ctx)
	}()
	if _, err := conn.Exec(s.ctx, "LISTEN "+pgx.Identifier{LogChannel}.Sanitize()); err != nil {
		return false, err
	}
	// Only now: a commit before LISTEN took effect shows here, one after
	// it sends a notification.
	var last int64
	if err := conn.QueryRow(s.ctx, `SELECT last_seq FROM meta`).Scan(&last); err != nil {
		return false, err
	}
	s.listen.mu.Lock()
	s.listen.conns++
	s.listen.mu.Unlock()
	s.listen.advance(uint64(last))
	for {
		wctx, cancel := context.WithTimeout(s.ctx, listenIdlePing)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			seq, perr := strconv.ParseUint(n.Payload, 10, 64)
			if perr != nil {
				// Not one of ours: read the log's end instead.
				var last int64
				if err := conn.QueryRow(s.ctx, `SELECT last_seq FROM meta`).Scan(&last); err != nil {
					return true, err
				}
				seq = uint64(last)
			}
			s.listen.advance(seq)
		case s.ctx.Err() != nil:
			return true, s.ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			// Idle: make sure the server is still there.
			pctx, cancel := context.WithTimeout(s.ctx, listenPingWait)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
		default:
			return true, err
		}
	}
}

// listenerConns reports how many listening connections were established
// (the first and each reconnect).
func (s *Postgres) listenerConns() uint64 {
	s.listen.mu.Lock()
	defer s.listen.mu.Unlock()
	return s.listen.conns
}
