package client

import (
	"context"
	"net/http"

	"github.com/strata-dm/strata/apitypes"
)

// Cluster (docs/api.md, "Cluster"; docs/cluster.md).

// ClusterStatus is a Raft cluster's replicas as GET /api/v1/cluster shows
// them, seen from the replica asked.
type ClusterStatus = apitypes.ClusterStatus

// ClusterMember is one replica.
type ClusterMember = apitypes.ClusterMember

// Cluster returns the replicas of the node (system administrators only;
// a node that is not a cluster answers not_implemented).
func (c *Client) Cluster(ctx context.Context) (*ClusterStatus, error) {
	var st ClusterStatus
	if err := c.do(ctx, http.MethodGet, "/api/v1/cluster", nil, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
