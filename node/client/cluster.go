package client

import (
	"context"
	"net/http"
	"net/url"

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

// TransferClusterLeader hands the cluster's leadership to another voter
// (any replica may be asked; the leader does it).
func (c *Client) TransferClusterLeader(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/api/v1/cluster/transfer-leader", nil, nil, nil)
}

// RemoveClusterMember removes the replica id from the cluster.
func (c *Client) RemoveClusterMember(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/cluster/members/"+url.PathEscape(id), nil, nil, nil)
}
