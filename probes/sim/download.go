package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// Device downloads (docs/software.md, "Device downloads"): a simulated
// device fetches an artifact from its node with its own credentials (the
// device id and secret in HTTP Basic authentication), resuming with
// Range: bytes=N- and If-Range after an interruption, and checks the
// bytes against the SHA-256 it asked for.

// ErrDigestMismatch is a download whose bytes do not hash to the SHA-256
// asked for.
var ErrDigestMismatch = errors.New("downloaded bytes do not match the artifact's sha256")

// errInterrupted is the simulated interruption of Downloader.InterruptAt.
var errInterrupted = errors.New("download interrupted (simulated)")

// DownloadError is a download the node refused: its status and error
// body.
type DownloadError struct {
	Status  int
	Code    string
	Message string
}

func (e *DownloadError) Error() string {
	return fmt.Sprintf("download: %d %s: %s", e.Status, e.Code, e.Message)
}

// DownloadResult is what one download took.
type DownloadResult struct {
	Size     int64 // the artifact's bytes
	Received int64 // body bytes received over every request
	Requests int   // requests sent
	Resumes  int   // requests that resumed after an interruption
}

// Downloader downloads artifacts as devices do. The zero value is not
// usable: API and Client are required.
type Downloader struct {
	API    string       // https://HOST:PORT of the node
	Client *http.Client // its transport trusts the node's certificate
	// Attempts bounds the requests of one download (default 5); an
	// interruption, a network error, 429 or 5xx is tried again from where
	// the bytes stopped, after Backoff (default 100 ms, doubling).
	Attempts int
	Backoff  time.Duration
	// InterruptAt, when positive, cuts the first answer with bytes of
	// each download after that many bytes, as a network failure would:
	// the rest comes in a resumed request (tests and benchmarks of
	// resumption).
	InterruptAt int64
}

// Download fetches artifact sum with device c's credentials into w and
// verifies its SHA-256. w receives each byte once, in order; on an error
// it may have received a prefix.
func (d *Downloader) Download(ctx context.Context, c Credentials, sum string, w io.Writer) (DownloadResult, error) {
	var res DownloadResult
	if !apitypes.ValidSHA256(sum) {
		return res, fmt.Errorf("download: artifact %q: want a sha256 in lower-case hex", sum)
	}
	user := c.MQTTUsername
	if user == "" {
		user = c.DeviceID
	}
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	backoff := d.Backoff
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	h := sha256.New()
	dst := io.MultiWriter(w, h)
	url := strings.TrimRight(d.API, "/") + "/api/v1/device/artifacts/" + sum
	size := int64(-1)
	cutDone := false
	var err error
	for attempt := 0; attempt < attempts; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return res, context.Cause(ctx)
			case <-t.C:
			}
			backoff *= 2
			if res.Received > 0 {
				res.Resumes++
			}
		}
		cut := d.InterruptAt
		if cutDone {
			cut = 0
		}
		var n int64
		n, size, err = d.once(ctx, url, user, c.MQTTPassword, sum, res.Received, size, cut, dst)
		res.Requests++
		res.Received += n
		cutDone = cutDone || errors.Is(err, errInterrupted)
		if err == nil {
			break
		}
		var de *DownloadError
		if errors.As(err, &de) && de.Status != http.StatusTooManyRequests && de.Status < 500 || ctx.Err() != nil {
			return res, err
		}
	}
	if err != nil {
		return res, err
	}
	res.Size = size
	return res, verifyDigest(h, sum)
}

func verifyDigest(h hash.Hash, sum string) error {
	if hex.EncodeToString(h.Sum(nil)) != sum {
		return ErrDigestMismatch
	}
	return nil
}

// once sends one request for the bytes from off (size: the artifact's,
// -1 while unknown) and copies the body to dst, at most cut bytes when cut
// is positive. It returns the bytes copied and the artifact's size; nil
// error means the artifact is complete.
func (d *Downloader) once(ctx context.Context, url, user, secret, sum string, off, size, cut int64, dst io.Writer) (int64, int64, error) {
	if size >= 0 && off >= size {
		return 0, size, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, size, err
	}
	req.SetBasicAuth(user, secret)
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		req.Header.Set("If-Range", `"`+sum+`"`)
	}
	resp, err := d.Client.Do(req)
	if err != nil {
		return 0, size, err
	}
	defer resp.Body.Close()
	var total int64
	switch {
	case resp.StatusCode == http.StatusOK && off == 0:
		total = resp.ContentLength
	case resp.StatusCode == http.StatusPartialContent:
		start, t, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			return 0, size, &DownloadError{Status: resp.StatusCode, Message: fmt.Sprintf("Content-Range %q for a resume at %d", resp.Header.Get("Content-Range"), off)}
		}
		total = t
	case resp.StatusCode == http.StatusOK:
		// The node ignored the range: its bytes are not the ones asked
		// for (If-Range), and what w has cannot be taken back.
		return 0, size, &DownloadError{Status: resp.StatusCode, Message: "the node sent the whole artifact to a resume"}
	default:
		de := &DownloadError{Status: resp.StatusCode}
		var body apitypes.ErrorBody
		if b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10)); json.Unmarshal(b, &body) == nil {
			de.Code, de.Message = body.Code, body.Message
		}
		return 0, size, de
	}
	if total < 0 || (size >= 0 && total != size) {
		return 0, size, &DownloadError{Status: resp.StatusCode, Message: "the artifact's size is unknown or changed"}
	}
	body := io.Reader(resp.Body)
	if cut > 0 {
		body = io.LimitReader(body, cut)
	}
	n, err := io.Copy(dst, body)
	switch {
	case err != nil:
		return n, total, err
	case off+n < total && cut > 0:
		return n, total, errInterrupted
	case off+n < total:
		return n, total, io.ErrUnexpectedEOF
	}
	return n, total, nil
}

// parseContentRange parses "bytes START-END/TOTAL" of a 206 answer.
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, false
	}
	span, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	total, err3 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || end >= total {
		return 0, 0, false
	}
	return start, total, true
}

// Download fetches artifact sum from Config.API as the fleet's device n
// (an index, once its credentials are known) into w, with the fleet's
// network (source addresses, Config.CAPEM) and d's attempts and
// interruption; d.API and d.Client are the fleet's when empty.
func (f *Fleet) Download(ctx context.Context, n int, sum string, w io.Writer, d Downloader) (DownloadResult, error) {
	f.mu.Lock()
	var dev *device
	if n >= 0 && n < len(f.devices) {
		dev = f.devices[n]
	}
	f.mu.Unlock()
	if dev == nil {
		return DownloadResult{}, fmt.Errorf("download: no device %d", n)
	}
	if d.API == "" {
		d.API = f.cfg.API
	}
	if d.Client == nil {
		c, err := f.downloadClient(n)
		if err != nil {
			return DownloadResult{}, err
		}
		d.Client = c
	}
	c := Credentials{Enrollment: apitypes.Enrollment{DeviceID: dev.id, MQTTUsername: dev.username, MQTTPassword: dev.password}}
	return d.Download(ctx, c, sum, w)
}

// downloadClient returns the HTTP client of device i's downloads: one per
// source address, shared.
func (f *Fleet) downloadClient(i int) (*http.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dlClients == nil {
		tlsConf, err := f.net.apiTLS()
		if err != nil {
			return nil, err
		}
		for _, dl := range f.net.dialers {
			f.dlClients = append(f.dlClients, &http.Client{Transport: &http.Transport{
				DialContext:         dl.DialContext,
				TLSClientConfig:     tlsConf,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
			}})
		}
	}
	return f.dlClients[i%len(f.dlClients)], nil
}

// DownloadReport is what DownloadAll measured.
type DownloadReport struct {
	Devices  int            // devices that downloaded
	OK       int            // downloads complete and verified
	Failed   int            // downloads that ended in an error
	Errors   map[string]int `json:",omitempty"` // failures by kind (HTTP status, digest, network)
	Bytes    int64          // body bytes received over every request
	Requests int
	Resumes  int
	Elapsed  time.Duration // from the first request to the last byte
	// Throughput is Bytes per second over Elapsed, aggregated over the
	// fleet.
	Throughput float64
}

// DownloadAll has every device of the fleet (once its credentials are
// known) download artifact sum once, at most concurrency at a time
// (default 64), discarding the bytes after verifying them; d is as for
// Download.
func (f *Fleet) DownloadAll(ctx context.Context, sum string, concurrency int, d Downloader) DownloadReport {
	f.mu.Lock()
	n := len(f.devices)
	f.mu.Unlock()
	if concurrency <= 0 {
		concurrency = 64
	}
	rep := DownloadReport{Devices: n, Errors: map[string]int{}}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int)
	)
	start := time.Now()
	for range min(concurrency, n) {
		wg.Go(func() {
			for i := range next {
				res, err := f.Download(ctx, i, sum, io.Discard, d)
				mu.Lock()
				rep.Bytes += res.Received
				rep.Requests += res.Requests
				rep.Resumes += res.Resumes
				if err != nil {
					rep.Failed++
					rep.Errors[downloadReason(err)]++
				} else {
					rep.OK++
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			rep.Failed += n - i
			rep.Errors["canceled"] += n - i
			break feed
		}
	}
	close(next)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if s := rep.Elapsed.Seconds(); s > 0 {
		rep.Throughput = float64(rep.Bytes) / s
	}
	return rep
}

// downloadReason is the kind of a failed download, for DownloadReport.
func downloadReason(err error) string {
	var de *DownloadError
	switch {
	case errors.As(err, &de):
		return "http_" + strconv.Itoa(de.Status)
	case errors.Is(err, ErrDigestMismatch):
		return "digest"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "network"
}
