package api

import (
	"context"
	"net/http"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/auth"
)

// The cluster (docs/api.md, "Cluster"): GET /api/v1/cluster shows the
// replicas of a node that is a Raft cluster, as the answering replica
// sees them. The replicas span every tenant: system administrators only.

// Cluster is what the API needs of a replica (node/cluster).
type Cluster interface {
	Status(ctx context.Context) (apitypes.ClusterStatus, error)
	// Role is "leader" or "follower", for /readyz.
	Role() string
	// TransferLeadership hands leadership to another voter; RemoveReplica
	// takes a replica out of the cluster (model.ErrNotFound for one that
	// is not a member). Either is done by the leader, wherever asked.
	TransferLeadership(ctx context.Context) error
	RemoveReplica(ctx context.Context, id string) error
	// ReadBarrier returns once a read on this replica is linearizable:
	// it holds every write acknowledged before the call (model.ErrNotLeader
	// when no leader answers).
	ReadBarrier(ctx context.Context) error
}

// ClusterRoleHeader names a ready replica's role on /readyz: leader or
// follower. A replica that knows no leader (no quorum) is not ready.
const ClusterRoleHeader = "X-Strata-Cluster-Role"

var errNoCluster = apiError(http.StatusNotImplemented, codeNotImplemented,
	"this node is not a cluster (see docs/cluster.md)")

func (s *Server) clusterStatus(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := requireSystem(p, "reading the cluster's state"); err != nil {
		return err
	}
	if s.cfg.Cluster == nil {
		return errNoCluster
	}
	st, err := s.cfg.Cluster.Status(r.Context())
	if err != nil {
		return err
	}
	if st.Members == nil {
		st.Members = []apitypes.ClusterMember{}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) transferLeader(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := requireSystem(p, "handing the cluster's leadership over"); err != nil {
		return err
	}
	if s.cfg.Cluster == nil {
		return errNoCluster
	}
	if err := s.cfg.Cluster.TransferLeadership(r.Context()); err != nil {
		return err
	}
	s.log.Info("cluster leadership handed over", "by", p.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) removeReplica(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := requireSystem(p, "removing a replica"); err != nil {
		return err
	}
	if s.cfg.Cluster == nil {
		return errNoCluster
	}
	id := r.PathValue("id")
	noteAudit(r, func(e *auditEntry) { e.rec.Target = id })
	if err := s.cfg.Cluster.RemoveReplica(r.Context(), id); err != nil {
		return err
	}
	s.log.Info("replica removed from the cluster", "replica", id, "by", p.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
