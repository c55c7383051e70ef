// Package download fetches a software artifact from a node as a device
// does (docs/software.md, "Device downloads"): with the device's own
// credentials in HTTP Basic authentication, resuming with
// Range: bytes=N- and If-Range after an interruption, and checking the
// bytes against the SHA-256 asked for. strata-agent and the simulator
// both use it; it imports nothing of the node.
package download

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
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// ErrDigestMismatch is a download whose bytes do not hash to the SHA-256
// asked for. The error returned is a *DigestError wrapping it.
var ErrDigestMismatch = errors.New("downloaded bytes do not match the artifact's sha256")

// DigestError names the digest asked for and the one the bytes have.
type DigestError struct {
	Want, Got string
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("%v: want %s, got %s", ErrDigestMismatch, e.Want, e.Got)
}

// Unwrap makes errors.Is(err, ErrDigestMismatch) hold.
func (e *DigestError) Unwrap() error { return ErrDigestMismatch }

// errInterrupted is the simulated interruption of Downloader.InterruptAt.
var errInterrupted = errors.New("download interrupted (simulated)")

// Error is a download the node refused: its status and error body, and
// its Retry-After (zero when absent).
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("download: %d %s: %s", e.Status, e.Code, e.Message)
}

// Auth is what a download authenticates with: the device's MQTT user
// name (its id) and its enrollment secret.
type Auth interface {
	DownloadAuth() (user, secret string)
}

// Basic is an Auth of a user name and a secret.
type Basic struct{ User, Secret string }

// DownloadAuth returns b's user and secret.
func (b Basic) DownloadAuth() (string, string) { return b.User, b.Secret }

// Result is what one download took.
type Result struct {
	Size     int64 // the artifact's bytes
	Received int64 // body bytes received over every request
	Requests int   // requests sent
	Resumes  int   // requests that resumed after an interruption
	// Offset is where the download started: bytes already held (a
	// partial file of an earlier attempt, for ToFile).
	Offset int64
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
	// NotReadyWait bounds the time spent waiting, as told by Retry-After,
	// on 503 and 429 answers (default 10 minutes; each wait at most 60
	// s): a tier still fetching an artifact from above answers 503 with
	// Retry-After. Such waits cost no attempt.
	NotReadyWait time.Duration
}

// Download fetches artifact sum with a's credentials into w and verifies
// its SHA-256. w receives each byte once, in order; on an error it may
// have received a prefix.
func (d *Downloader) Download(ctx context.Context, a Auth, sum string, w io.Writer) (Result, error) {
	return d.Resume(ctx, a, sum, 0, -1, sha256.New(), w)
}

// Resume continues a download of which the first off bytes are held
// already: h must have hashed exactly them (a fresh SHA-256 when off is
// 0) and w receives the bytes after them. size is the artifact's size
// when known (else -1): a download whose off is size asks nothing of the
// node and only verifies the digest.
func (d *Downloader) Resume(ctx context.Context, a Auth, sum string, off, size int64, h hash.Hash, w io.Writer) (Result, error) {
	res := Result{Offset: off}
	if !apitypes.ValidSHA256(sum) {
		return res, fmt.Errorf("download: artifact %q: want a sha256 in lower-case hex", sum)
	}
	if off < 0 || size >= 0 && off > size {
		return res, fmt.Errorf("download: offset %d outside the artifact's %d bytes", off, size)
	}
	user, secret := a.DownloadAuth()
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 5
	}
	backoff := d.Backoff
	if backoff <= 0 {
		backoff = 100 * time.Millisecond
	}
	notReady := d.NotReadyWait
	if notReady <= 0 {
		notReady = 10 * time.Minute
	}
	dst := io.MultiWriter(w, h)
	url := strings.TrimRight(d.API, "/") + "/api/v1/device/artifacts/" + sum
	cutDone := false
	var err error
	var waited time.Duration
	delay := time.Duration(0) // before the next request
	for attempt := 0; attempt < attempts && (size < 0 || off < size); attempt++ {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return res, context.Cause(ctx)
			case <-t.C:
			}
		}
		if attempt > 0 && (res.Received > 0 || off > 0) {
			res.Resumes++
		}
		cut := d.InterruptAt
		if cutDone {
			cut = 0
		}
		var n int64
		n, size, err = d.once(ctx, url, user, secret, sum, off+res.Received, size, cut, dst)
		res.Requests++
		res.Received += n
		cutDone = cutDone || errors.Is(err, errInterrupted)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return res, err
		}
		var de *Error
		switch {
		case errors.As(err, &de) && de.RetryAfter > 0 && waited+de.RetryAfter <= notReady &&
			(de.Status == http.StatusServiceUnavailable || de.Status == http.StatusTooManyRequests):
			// The node asks to come back (an artifact its tier is still
			// fetching, a rate limit): that costs no attempt.
			waited += de.RetryAfter
			delay = de.RetryAfter
			attempt--
			continue
		case errors.As(err, &de) && de.Status != http.StatusTooManyRequests && de.Status < 500:
			return res, err
		}
		delay = backoff
		backoff *= 2
	}
	if err != nil {
		return res, err
	}
	res.Size = size
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return res, &DigestError{Want: sum, Got: got}
	}
	return res, nil
}

// ToFile downloads artifact sum of size bytes into path, continuing the
// partial file an earlier attempt left there (its bytes are hashed
// first; more than size bytes start over). The file is synced before
// ToFile returns. A digest mismatch removes the file, so the next
// attempt starts from nothing; Result.Offset is what was reused.
func (d *Downloader) ToFile(ctx context.Context, a Auth, sum string, size int64, path string) (Result, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return Result{}, err
	}
	defer f.Close()
	h := sha256.New()
	off, err := io.Copy(h, f)
	if err != nil {
		return Result{}, err
	}
	if size >= 0 && off > size {
		if err := f.Truncate(0); err != nil {
			return Result{}, err
		}
		off, h = 0, sha256.New()
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return Result{}, err
	}
	res, err := d.Resume(ctx, a, sum, off, size, h, f)
	if serr := f.Sync(); err == nil && serr != nil {
		err = serr
	}
	if errors.Is(err, ErrDigestMismatch) {
		f.Close()
		os.Remove(path)
	}
	return res, err
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
		start, t, ok := ParseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			return 0, size, &Error{Status: resp.StatusCode, Message: fmt.Sprintf("Content-Range %q for a resume at %d", resp.Header.Get("Content-Range"), off)}
		}
		total = t
	case resp.StatusCode == http.StatusOK:
		// The node ignored the range: its bytes are not the ones asked
		// for (If-Range), and what w has cannot be taken back.
		return 0, size, &Error{Status: resp.StatusCode, Message: "the node sent the whole artifact to a resume"}
	default:
		de := &Error{Status: resp.StatusCode, RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
		var body apitypes.ErrorBody
		if b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10)); json.Unmarshal(b, &body) == nil {
			de.Code, de.Message = body.Code, body.Message
		}
		return 0, size, de
	}
	if total < 0 || (size >= 0 && total != size) {
		return 0, size, &Error{Status: resp.StatusCode, Message: "the artifact's size is unknown or changed"}
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

// retryAfter reads a Retry-After of whole seconds, at most a minute.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 60)) * time.Second
}

// ParseContentRange parses "bytes START-END/TOTAL" of a 206 answer.
func ParseContentRange(s string) (start, total int64, ok bool) {
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

// Reason is the kind of a failed download, for counting: http_<status>,
// digest, canceled or network.
func Reason(err error) string {
	var de *Error
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
