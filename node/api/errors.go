package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/releases"
)

// Error codes of every error body, as short names (package apitypes
// defines them, docs/api.md lists them).
const (
	codeInvalid          = apitypes.CodeInvalid
	codeUnauthorized     = apitypes.CodeUnauthorized
	codeForbidden        = apitypes.CodeForbidden
	codeNotFound         = apitypes.CodeNotFound
	codeConflict         = apitypes.CodeConflict
	codeTooLarge         = apitypes.CodeTooLarge
	codeRateLimited      = apitypes.CodeRateLimited
	codeUnavailable      = apitypes.CodeUnavailable
	codeInternal         = apitypes.CodeInternal
	codeNotImplemented   = apitypes.CodeNotImplemented
	codeMethodNotAllowed = apitypes.CodeMethodNotAllowed
	codeRequestTimeout   = apitypes.CodeRequestTimeout
)

// httpError is an answer decided by the API itself rather than derived
// from a sentinel error of model or auth.
type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.message }

func apiError(status int, code, format string, args ...any) *httpError {
	return &httpError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// invalidf is a 400 for input the API itself rejects.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{model.ErrInvalid}, args...)...)
}

// contextNotFound is the one error for a missing context and for a context
// the caller may not see: identical text, so existence is never revealed.
func contextNotFound(p model.Path) error {
	return fmt.Errorf("%w: context %s", model.ErrNotFound, p)
}

// errorStatus maps an error to its HTTP status and code. It is the only
// place that does; handlers return sentinel errors (wrapped with context)
// and never choose statuses themselves.
func errorStatus(err error) (status int, code string) {
	var ae *httpError
	var mbe *http.MaxBytesError
	var rle *auth.RateLimitError
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.code
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, codeTooLarge
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout, codeRequestTimeout
	case errors.As(err, &rle), errors.Is(err, auth.ErrRateLimited):
		return http.StatusTooManyRequests, codeRateLimited
	case errors.Is(err, auth.ErrUnauthorized):
		return http.StatusUnauthorized, codeUnauthorized
	case errors.Is(err, auth.ErrForbidden), errors.Is(err, model.ErrShared):
		return http.StatusForbidden, codeForbidden
	case errors.Is(err, model.ErrInvalidPath), errors.Is(err, model.ErrInvalid):
		return http.StatusBadRequest, codeInvalid
	case errors.Is(err, model.ErrNotFound):
		return http.StatusNotFound, codeNotFound
	case errors.Is(err, model.ErrConflict):
		return http.StatusConflict, codeConflict
	case errors.Is(err, model.ErrClosed), errors.Is(err, model.ErrNotLeader), errors.Is(err, releases.ErrNotReady), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return http.StatusServiceUnavailable, codeUnavailable
	}
	return http.StatusInternalServerError, codeInternal
}

// writeError answers err as JSON. Internal errors are answered with the
// request id only; the error itself is logged (by the request middleware)
// under that id.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	if b := bodyOf(r); b != nil && b.timedOut.Load() {
		// Whatever the handler made of the failed read, the answer is
		// the timeout; the connection cannot carry another request.
		err = fmt.Errorf("%w: send it within %v", errBodyTimeout, b.grace)
		w.Header().Set("Connection", "close")
	}
	status, code := errorStatus(err)
	msg := err.Error()
	var rle *auth.RateLimitError
	switch {
	case status == http.StatusInternalServerError:
		msg = "internal error, request id " + requestID(r)
	case status == http.StatusUnauthorized:
		if w.Header().Get("WWW-Authenticate") == "" { // device routes set their own
			w.Header().Set("WWW-Authenticate", `Bearer realm="strata"`)
		}
	case errors.As(err, &rle):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(rle.RetryAfter)))
	case errors.Is(err, releases.ErrNotReady):
		w.Header().Set("Retry-After", "5")
	case errors.Is(err, model.ErrClosed):
		msg = "the node is shutting down"
	}
	if rec, ok := w.(*recorder); ok {
		rec.err = err
	}
	writeJSON(w, status, apitypes.ErrorBody{Message: msg, Code: code})
}

// retryAfterSeconds rounds d up to whole seconds, at least one.
func retryAfterSeconds(d time.Duration) int {
	secs := int((d + time.Second - 1) / time.Second)
	return max(secs, 1)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a bug gets here (every answer type marshals).
		status = http.StatusInternalServerError
		b = []byte(`{"error":"internal error: cannot encode answer","code":"internal"}`)
		if rec, ok := w.(*recorder); ok {
			rec.err = fmt.Errorf("encode answer: %w", err)
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store") // answers may hold secrets (tokens)
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
