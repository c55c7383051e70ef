package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// EnrollError is a refusal of POST /api/v1/enroll, with the API's error
// body ({"error": ..., "code": ...}).
type EnrollError struct {
	Status  int
	Code    string
	Message string
}

func (e *EnrollError) Error() string {
	return fmt.Sprintf("enroll: %d %s: %s", e.Status, e.Code, e.Message)
}

// retryable reports whether an enrollment request may succeed later: 429,
// 5xx and network errors, but not a refusal or a certificate problem.
func retryable(err error) bool {
	var (
		ee       *EnrollError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		verify   *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &ee):
		return ee.Status == http.StatusTooManyRequests || ee.Status >= 500
	case errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &verify):
		return false
	}
	return true
}

// enrollAttempts bounds the attempts per device.
const enrollAttempts = 10

// enroller exchanges the enrollment token for device credentials.
type enroller struct {
	url     string
	token   string
	clients []*http.Client // one per source address, round robin by device
	stats   *stats
}

func newEnroller(api, token string, tlsConf *tls.Config, dialers []*net.Dialer, concurrency int, st *stats) *enroller {
	e := &enroller{url: strings.TrimRight(api, "/") + "/api/v1/enroll", token: token, stats: st}
	for _, d := range dialers {
		e.clients = append(e.clients, &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext:         d.DialContext,
				TLSClientConfig:     tlsConf,
				MaxIdleConnsPerHost: concurrency,
				IdleConnTimeout:     30 * time.Second,
				ForceAttemptHTTP2:   false,
			},
		})
	}
	return e
}

// close releases idle HTTP connections.
func (e *enroller) close() {
	for _, c := range e.clients {
		c.CloseIdleConnections()
	}
}

// enroll enrolls device n under hardwareID, retrying 429, 5xx and network
// errors with exponential backoff (honouring Retry-After).
func (e *enroller) enroll(ctx context.Context, n int, hardwareID string) (Credentials, error) {
	client := e.clients[n%len(e.clients)]
	body, _ := json.Marshal(apitypes.EnrollRequest{Token: e.token, HardwareID: hardwareID})
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		creds, wait, err := e.once(ctx, client, body)
		if err == nil {
			creds.HardwareID = hardwareID
			return creds, nil
		}
		if !retryable(err) || attempt == enrollAttempts || ctx.Err() != nil {
			return Credentials{}, err
		}
		if wait == 0 {
			wait = backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, 10*time.Second)
		}
		e.stats.enrollRetries.Add(1)
		select {
		case <-ctx.Done():
			return Credentials{}, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// once makes one request; wait is the server's Retry-After, if any.
func (e *enroller) once(ctx context.Context, client *http.Client, body []byte) (Credentials, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return Credentials{}, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return Credentials{}, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Credentials{}, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		ee := &EnrollError{Status: resp.StatusCode}
		var eb apitypes.ErrorBody
		if json.Unmarshal(data, &eb) == nil {
			ee.Code, ee.Message = eb.Code, eb.Message
		}
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			wait = min(time.Duration(s)*time.Second, time.Minute)
		}
		return Credentials{}, wait, ee
	}
	var c Credentials
	if err := json.Unmarshal(data, &c); err != nil {
		return Credentials{}, 0, fmt.Errorf("enroll: bad response: %w", err)
	}
	if err := c.validate(); err != nil {
		return Credentials{}, 0, fmt.Errorf("enroll: %w", err)
	}
	return c, 0, nil
}

// enrollAll enrolls devices first..n-1 into creds (which has length n),
// EnrollConcurrency at a time. A 401 (bad or used-up token) stops the
// phase: every later request would fail the same way. Failed devices keep
// an empty entry.
func (f *Fleet) enrollAll(ctx context.Context, e *enroller, creds []Credentials, first int) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	next.Store(int64(first))
	var wg sync.WaitGroup
	for range min(f.cfg.EnrollConcurrency, len(creds)-first) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(creds) || ctx.Err() != nil {
					return
				}
				hw := fmt.Sprintf("sim-%s-%d", f.cfg.IDPrefix, i)
				c, err := e.enroll(ctx, i, hw)
				if err != nil {
					if ctx.Err() != nil && errors.Is(err, context.Canceled) {
						return
					}
					f.note(&f.stats.enrollFailures, "enroll", err)
					var ee *EnrollError
					if errors.As(err, &ee) && ee.Status == http.StatusUnauthorized {
						cancel()
					}
					continue
				}
				creds[i] = c
				f.stats.enrolled.Add(1)
			}
		})
	}
	wg.Wait()
}

// enrollReason labels an enrollment failure for the report.
func enrollReason(err error) string {
	var ee *EnrollError
	if errors.As(err, &ee) {
		return fmt.Sprintf("%d %s", ee.Status, ee.Code)
	}
	return cause(err)
}
