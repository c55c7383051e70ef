package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Reconnection delays of Watch when a connection fails without delivering
// anything; a server's "retry:" field replaces the first one.
const (
	watchMinDelay = 250 * time.Millisecond
	watchMaxDelay = 15 * time.Second
)

// ChangeStream is one open connection to the live change stream. It is
// not safe for concurrent use; Close may be called from any goroutine to
// make a blocked Next return.
type ChangeStream struct {
	body io.ReadCloser
	p    *sseParser
	last uint64
}

// Changes opens the change stream of the contexts under path (all when
// empty), resuming after the sequence number after; zero is no cursor, so
// the stream carries live changes only. It returns once the server has
// answered.
func (c *Client) Changes(ctx context.Context, path string, after uint64) (*ChangeStream, error) {
	q := url.Values{}
	if path != "" {
		q.Set("path", contextPath(path))
	}
	hdr := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
	if after > 0 {
		s := strconv.FormatUint(after, 10)
		q.Set("after", s)
		hdr.Set("Last-Event-ID", s)
	}
	resp, err := c.send(ctx, http.MethodGet, "/api/v1/changes", q, nil, hdr)
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("client: change stream answered with content type %q", resp.Header.Get("Content-Type"))
	}
	return &ChangeStream{body: resp.Body, p: newSSEParser(resp.Body), last: after}, nil
}

// Next blocks until the next change (or reset) arrives. It returns io.EOF
// when the server ended the stream.
func (s *ChangeStream) Next() (Change, error) {
	for {
		ev, err := s.p.next()
		if err != nil {
			return Change{}, err
		}
		id, idErr := strconv.ParseUint(ev.ID, 10, 64)
		switch ev.Type {
		case "change":
			var ch Change
			if err := json.Unmarshal([]byte(ev.Data), &ch); err != nil {
				return Change{}, fmt.Errorf("client: change %s: %w", ev.ID, err)
			}
			if ch.Seq == 0 && idErr == nil {
				ch.Seq = id
			}
			s.last = max(ch.Seq, s.last)
			return ch, nil
		case "reset":
			ch := Change{Op: OpReset, Reset: true}
			if idErr == nil {
				ch.Seq = id
			}
			// Whatever the reset carries about the head, the cursor moves
			// there: resuming from the old one would only reset again.
			var body struct {
				Seq uint64 `json:"seq"`
			}
			if json.Unmarshal([]byte(ev.Data), &body) == nil && body.Seq > 0 {
				ch.Seq = body.Seq
			}
			if ch.Seq > 0 {
				s.last = ch.Seq
			}
			return ch, nil
		}
		// Unknown event types are skipped (forward compatibility), but
		// their ids still advance the cursor.
		if idErr == nil {
			s.last = max(id, s.last)
		}
	}
}

// LastSeq is the sequence number to resume after: the last change seen,
// or the cursor the stream was opened with.
func (s *ChangeStream) LastSeq() uint64 { return s.last }

// Retry is the reconnection delay the server asked for, zero if none.
func (s *ChangeStream) Retry() time.Duration { return s.p.retry }

// Close ends the stream.
func (s *ChangeStream) Close() error { return s.body.Close() }

// Watch follows the change stream under path from after, calling fn for
// every change (and reset) in order. When the connection drops it
// reconnects, resuming with Last-Event-ID after the last change fn saw, so
// fn sees every change once. It returns fn's error, ctx's error, or an
// *APIError the server refused the stream with (except 429 and 5xx, which
// are retried).
func (c *Client) Watch(ctx context.Context, path string, after uint64, fn func(Change) error) error {
	delay := time.Duration(0)
	for {
		w := watch{after: after}
		err := c.watchOnce(ctx, path, &w, fn)
		after = w.after
		if w.fnErr != nil {
			return w.fnErr
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.Status < 500 && ae.Status != http.StatusTooManyRequests {
			return err
		}
		switch {
		case w.delivered:
			delay = 0
		case delay == 0 && w.retry > 0:
			delay = w.retry
		case delay == 0:
			delay = watchMinDelay
		default:
			delay = min(2*delay, watchMaxDelay)
		}
		if ae != nil && ae.RetryAfter > delay {
			delay = ae.RetryAfter
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}

// watch is the state of one Watch connection.
type watch struct {
	after     uint64        // resume cursor, advanced past what fn accepted
	delivered bool          // the connection delivered at least one change
	retry     time.Duration // the server's reconnection delay
	fnErr     error         // fn's error, which ends Watch
}

// watchOnce runs one connection until it fails or fn refuses a change.
func (c *Client) watchOnce(ctx context.Context, path string, w *watch, fn func(Change) error) error {
	s, err := c.Changes(ctx, path, w.after)
	if err != nil {
		return err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		ch, err := s.Next()
		w.retry = s.Retry()
		if err != nil {
			return err
		}
		w.delivered = true
		if err := fn(ch); err != nil {
			w.fnErr = err
			return err
		}
		w.after = s.LastSeq()
	}
}
