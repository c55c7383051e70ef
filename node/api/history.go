package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/history"
)

// historyPrefix is followed by a context path.
const historyPrefix = "/api/v1/history"

// remoteHistoryTimeout bounds a history read routed down the links.
const remoteHistoryTimeout = time.Minute

// History answers history reads of this node's contexts;
// *history.Service implements it.
type History interface {
	Read(ctx context.Context, p model.Path, q history.Query) ([]history.Point, error)
	MaxPoints() int
}

var errNoHistory = apiError(http.StatusNotImplemented, codeNotImplemented,
	"history is not enabled on this node (history.enabled)")

// getHistory answers GET /api/v1/history/{path}: the checks are those of
// reading the context itself (the viewer role on the path; a context of
// another tenant answers as a missing one). A mounted path is read on
// the node that owns the device, which checks the operator's tenant
// again.
func (s *Server) getHistory(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	path, err := urlContextPath(r, historyPrefix)
	if err != nil {
		return err
	}
	if !p.Can(auth.RoleViewer, path) {
		return forbidden("reading the history of", auth.RoleViewer, path)
	}
	maxPoints := history.DefaultMaxPoints
	if s.cfg.History != nil {
		maxPoints = s.cfg.History.MaxPoints()
	}
	q, err := history.ParseQuery(r.URL.Query(), time.Now(), maxPoints)
	if err != nil {
		return err
	}
	var points []byte
	if s.mounted(path) {
		fed, err := s.federation()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), remoteHistoryTimeout)
		defer cancel()
		stop := context.AfterFunc(s.quit, cancel)
		defer stop()
		b, err := fed.History(ctx, identity(p), path, []byte(q.Values().Encode()))
		if err != nil {
			return peerError(path, err)
		}
		var check []json.RawMessage
		if err := json.Unmarshal(b, &check); err != nil {
			return fmt.Errorf("history of %s from its peer: %w", path, err)
		}
		points = b
	} else {
		if s.cfg.History == nil {
			return errNoHistory
		}
		if _, err := s.visibleContext(p, path); err != nil {
			return err
		}
		ps, err := s.cfg.History.Read(r.Context(), path, q)
		if err != nil {
			return err
		}
		points = history.AppendJSON(make([]byte, 0, 32*len(ps)+2), ps)
	}
	head, err := json.Marshal(struct {
		Path model.Path `json:"path"`
		Var  string     `json:"var"`
		From int64      `json:"from"`
		To   int64      `json:"to"`
		Step int64      `json:"step,omitempty"`
		Agg  string     `json:"agg,omitempty"`
	}{path, q.Var, q.From, q.To, q.Step, q.Agg})
	if err != nil {
		return err
	}
	body := make([]byte, 0, len(head)+len(points)+16)
	body = append(body, head[:len(head)-1]...)
	body = append(body, `,"points":`...)
	body = append(body, points...)
	body = append(body, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(body)
	return nil
}
