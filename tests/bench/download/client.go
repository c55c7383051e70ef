package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/strata-dm/strata/probes/sim"
)

// perSource is the most connections the bench opens from one loopback
// source address: the node allows 256 per client address
// (api.max_conns_per_address), so the devices' connections are spread
// over 127.0.1.x addresses as devices on many hosts would be.
const perSource = 200

// fleet is the simulated devices' side of the downloads: their
// credentials and the HTTP clients they download with.
type fleet struct {
	creds       []sim.Credentials
	concurrency int
	tls         *tls.Config
	sources     int // source addresses a round's connections come from
	rounds      int // transports made so far, each round's from other addresses
	rcvbuf      int // SO_RCVBUF of each connection; 0: the kernel's autotuning
}

func newFleet(creds []sim.Credentials, concurrency, rcvbuf int, caPEM []byte) (*fleet, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in the CA PEM")
	}
	if concurrency <= 0 || concurrency > len(creds) {
		concurrency = len(creds)
	}
	f := &fleet{creds: creds, concurrency: concurrency, rcvbuf: rcvbuf,
		// As probes/sim's devices: the node's CA, TLS 1.2 at least.
		tls: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	f.sources = (concurrency + perSource - 1) / perSource
	if f.sources > 250 {
		return nil, fmt.Errorf("%d downloads at once: at most %d", concurrency, 250*perSource)
	}
	return f, nil
}

// transports returns one fresh HTTP transport per source address, as
// probes/sim's Fleet makes them: the TLS configuration and a dialer set,
// so HTTP/1.1 only, keep-alive. Each call takes its addresses from
// another 127.0.N.0/24 (N = 1 to 16 in turn): the server may not have
// seen the previous round's connections close yet, and they would still
// count against its connections per client address.
func (f *fleet) transports() []*http.Transport {
	net3 := byte(1 + f.rounds%16)
	f.rounds++
	out := make([]*http.Transport, f.sources)
	for i := range out {
		ip := net.IPv4(127, 0, net3, byte(1+i))
		d := &net.Dialer{Timeout: sim.DefaultConfig().ConnectTimeout, LocalAddr: &net.TCPAddr{IP: ip}, Control: f.control}
		out[i] = &http.Transport{
			DialContext:         d.DialContext,
			TLSClientConfig:     f.tls,
			MaxIdleConnsPerHost: perSource,
			IdleConnTimeout:     30 * time.Second,
		}
	}
	return out
}

// control sets the receive buffer of a device's socket before it
// connects (so that the window scale it offers fits it). Devices on their
// own machines each have their own memory; here their receive buffers
// share this machine's TCP memory with the server's send buffers, and
// left to autotuning 1,000 of them grow to megabytes each until the
// kernel's TCP memory pressure (net.ipv4.tcp_mem) prunes and drops
// segments, stalling connections for retransmission timeouts.
func (f *fleet) control(_, _ string, c syscall.RawConn) error {
	if f.rcvbuf <= 0 {
		return nil
	}
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, f.rcvbuf)
	})
	return errors.Join(err, serr)
}

// roundResult is one side's downloads of one round.
type roundResult struct {
	Side     string
	OK       int
	Failed   int
	Errors   map[string]int
	Bytes    int64 // body bytes received
	Requests int
	Resumes  int
	Wall     time.Duration // from the first request to the last byte
	Times    []time.Duration
	Server   serverUsage
	Client   time.Duration // the bench's (the devices') CPU time
	Load     string        // /proc/loadavg before the round
	// RequestErrors are the requests that got no answer (tried again),
	// by kind, and the first error of each kind.
	RequestErrors     map[string]int
	FirstRequestError map[string]string
}

// serverUsage is the server process's CPU over the round.
type serverUsage struct {
	CPU time.Duration `json:"cpu"`
	RSS float64       `json:"rss_mb"`
}

// throughput is bytes per second over the round's wall time.
func (r *roundResult) throughput() float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Wall.Seconds()
}

// quantile is the q-quantile of the successful downloads' times.
func (r *roundResult) quantile(q float64) time.Duration {
	if len(r.Times) == 0 {
		return 0
	}
	return r.Times[min(len(r.Times)-1, int(q*float64(len(r.Times))))]
}

// downloadAll has every device download artifact sum from api (https://
// HOST:PORT) once, at most f.concurrency at a time, with probes/sim's
// Downloader (HTTP Basic with the device's id and secret, resumes,
// retries), verifying each download's SHA-256 while discarding its bytes;
// as sim.Fleet.DownloadAll does, plus each download's time.
func (f *fleet) downloadAll(ctx context.Context, api, sum string) roundResult {
	trs := f.transports()
	defer func() {
		for _, tr := range trs {
			tr.CloseIdleConnections()
		}
	}()
	res := roundResult{Errors: map[string]int{}}
	failed := &failedRequests{n: map[string]int{}, first: map[string]string{}}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int)
	)
	start := time.Now()
	for w := range f.concurrency {
		// Worker w always uses source address w%len: at most perSource
		// connections from one address.
		d := sim.Downloader{API: api, Client: &http.Client{Transport: &counting{trs[w%len(trs)], failed}}}
		wg.Go(func() {
			for i := range next {
				t0 := time.Now()
				dr, err := d.Download(ctx, f.creds[i], sum, io.Discard)
				took := time.Since(t0)
				mu.Lock()
				res.Bytes += dr.Received
				res.Requests += dr.Requests
				res.Resumes += dr.Resumes
				if err != nil {
					res.Failed++
					res.Errors[reason(err)]++
				} else {
					res.OK++
					res.Times = append(res.Times, took)
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range f.creds {
		select {
		case next <- i:
		case <-ctx.Done():
			res.Failed += len(f.creds) - i
			res.Errors["canceled"] += len(f.creds) - i
			break feed
		}
	}
	close(next)
	wg.Wait()
	res.Wall = time.Since(start)
	slices.Sort(res.Times)
	res.RequestErrors, res.FirstRequestError = failed.n, failed.first
	return res
}

// failedRequests counts the requests that got no answer, by kind (the
// Downloader tries them again), with the first error of each kind.
type failedRequests struct {
	mu    sync.Mutex
	n     map[string]int
	first map[string]string
}

// counting is a transport that counts its failed requests.
type counting struct {
	http.RoundTripper
	failed *failedRequests
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.RoundTripper.RoundTrip(r)
	if err != nil && r.Context().Err() == nil {
		k := requestErrKind(err)
		c.failed.mu.Lock()
		if c.failed.n[k]++; c.failed.n[k] == 1 {
			c.failed.first[k] = err.Error()
		}
		c.failed.mu.Unlock()
	}
	return resp, err
}

func requestErrKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// reason is the kind of a failed download.
func reason(err error) string {
	var de *sim.DownloadError
	switch {
	case errors.As(err, &de):
		return "http_" + strconv.Itoa(de.Status)
	case errors.Is(err, sim.ErrDigestMismatch):
		return "digest"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "network"
}

// probe asks api for the artifact's first byte with device 0's
// credentials and returns what the connection negotiated, so that the
// run shows both sides speak the same protocol.
func (f *fleet) probe(ctx context.Context, api, sum string) (string, error) {
	tr := f.transports()[0]
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api+artifacts+sum, nil)
	if err != nil {
		return "", err
	}
	c := f.creds[0]
	user := c.MQTTUsername
	if user == "" {
		user = c.DeviceID
	}
	req.SetBasicAuth(user, c.MQTTPassword)
	req.Header.Set("Range", "bytes=0-0")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusPartialContent {
		return "", fmt.Errorf("GET %s with Range: status %d", req.URL.Path, resp.StatusCode)
	}
	if resp.TLS == nil {
		return "", errors.New("not TLS")
	}
	return fmt.Sprintf("%s, %s, %s", resp.Proto, tls.VersionName(resp.TLS.Version), tls.CipherSuiteName(resp.TLS.CipherSuite)), nil
}
