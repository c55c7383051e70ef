package api

import (
	"context"
	"net/http"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/releases"
)

// Software across tiers (docs/software.md): staging a release to nodes
// below, and the cache of each tier.

// Software is what the node does with releases across its links; nil:
// these routes answer 501.
type Software interface {
	// Stage sends release ref to the nodes at peers, which fetch its
	// artifacts now.
	Stage(ctx context.Context, p *auth.Principal, ref releases.Ref, peers []model.Path) ([]apitypes.StageResult, error)
	// CacheTiers returns this node's artifact cache and every node's
	// below it.
	CacheTiers(ctx context.Context, p *auth.Principal) ([]apitypes.CacheTier, error)
}

var errNoSoftware = apiError(http.StatusNotImplemented, codeNotImplemented, "software distribution is not enabled on this node")

// maxStagePeers bounds a staging's nodes.
const maxStagePeers = 256

func (s *Server) stageRelease(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Software == nil {
		return errNoSoftware
	}
	_, ref, err := s.releaseRequest(r)
	if err != nil {
		return err
	}
	var req apitypes.StageRequest
	if err := s.decodeJSON(w, r, &req); err != nil {
		return err
	}
	if len(req.Peers) == 0 || len(req.Peers) > maxStagePeers {
		return invalidf("peers: 1 to %d mounted nodes (/peers/<name>...)", maxStagePeers)
	}
	peers := make([]model.Path, 0, len(req.Peers))
	for _, raw := range req.Peers {
		path, err := model.ParsePath(raw)
		if err != nil {
			return invalidf("peers: %q: %v", raw, err)
		}
		peers = append(peers, path)
	}
	res, err := s.cfg.Software.Stage(r.Context(), p, ref, peers)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apitypes.StageResults{Staged: res})
	return nil
}

func (s *Server) softwareCache(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if s.cfg.Software == nil {
		return errNoSoftware
	}
	for k := range r.URL.Query() {
		return invalidf("%s: the cache listing takes no parameters", k)
	}
	tiers, err := s.cfg.Software.CacheTiers(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apitypes.CacheTiers{Tiers: tiers})
	return nil
}

// installArgs resolves an install's release (docs/software.md,
// "Software rollouts"): other functions' args are left alone.
func (s *Server) installArgs(p *auth.Principal, function string, args []byte) ([]byte, error) {
	if function != releases.InstallFunction || s.cfg.Releases == nil {
		return args, nil
	}
	out, _, err := s.cfg.Releases.InstallArgs(p, args)
	return out, err
}
