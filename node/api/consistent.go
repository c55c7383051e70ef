package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/strata-dm/strata/node/auth"
)

// Linearizable reads on a cluster (docs/api.md, "Consistent reads";
// docs/cluster.md, "Reads"). A replica serves reads from its own store,
// which may be behind the leader by its apply lag. Any GET of a route
// that takes a bearer token may ask for ?consistent=true: the replica
// then waits for its read barrier (Cluster.ReadBarrier: it holds every
// write acknowledged before the request) and authenticates the caller
// again after it, before the handler runs. So the answer reflects every
// write acknowledged anywhere in the cluster before the request began,
// including a token or user created, revoked or given other grants
// through another replica; the handler's grant and tenant checks then
// run as for any read. A single node's reads are linearizable already:
// the parameter is validated and otherwise ignored.
//
// A bearer token this replica does not know is tried again after the
// barrier when the request asks for a consistent read (the token may
// have been created through another replica a moment ago). Such a
// request holds one of the unauthenticated requests' slots for the
// barrier (MaxUnauthenticated, MaxUnauthenticatedPerAddr); without one
// it is answered 401 at once and counted in strata_api_refused_total. Its
// wait for the barrier is bounded by unknownTokenWait (then 503), so that
// strangers cannot hold those slots for long while a replica lags.

// unknownTokenWait bounds the read barrier of a consistent read whose
// token this replica does not know.
const unknownTokenWait = 5 * time.Second

// parseConsistent reads ?consistent=: true for "true" or "1", false when
// absent, "false" or "0", model.ErrInvalid otherwise.
func parseConsistent(r *http.Request) (bool, error) {
	switch v := r.URL.Query().Get("consistent"); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, invalidf("consistent %q: want true or false", v)
	}
}

// consistentRequested reports whether r asked for a consistent read (for
// handlers that read differently then; authenticate has already waited
// for the barrier and refused a bad value).
func consistentRequested(r *http.Request) bool {
	want, err := parseConsistent(r)
	return want && err == nil
}

// authenticate authenticates token for r, after the read barrier when r
// is a GET or HEAD asking for a consistent read on a cluster.
func (s *Server) authenticate(r *http.Request, token string) (*auth.Principal, error) {
	ctx := r.Context()
	p, err := s.auth.Authenticate(ctx, token)
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return p, err
	}
	want, perr := parseConsistent(r)
	retry := want && s.cfg.Cluster != nil && errors.Is(err, auth.ErrUnauthorized)
	switch {
	case err != nil && !retry:
		return nil, err
	case perr != nil:
		return nil, perr // authenticated: a bad value is not news to a stranger
	case !want || s.cfg.Cluster == nil:
		return p, nil
	}
	if err != nil {
		addr := clientAddr(r.RemoteAddr)
		ok, perAddr := s.unauth.acquire(addr)
		if !ok {
			if perAddr {
				s.metrics.refuse(refusedUnauthPerAddr)
			} else {
				s.metrics.refuse(refusedUnauth)
			}
			return nil, err
		}
		defer s.unauth.release(addr)
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, unknownTokenWait)
		defer cancel()
	}
	if err := s.cfg.Cluster.ReadBarrier(ctx); err != nil {
		return nil, err
	}
	return s.auth.Authenticate(r.Context(), token)
}
