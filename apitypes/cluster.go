package apitypes

// ClusterStatus is a Raft cluster of replicas as GET /api/v1/cluster
// shows it (docs/api.md, "Cluster"; docs/cluster.md), seen from the
// replica that answers.
type ClusterStatus struct {
	// Leader is the leading replica's id, "" while there is none.
	Leader  string          `json:"leader"`
	Term    uint64          `json:"term"`
	Members []ClusterMember `json:"members"`
}

// ClusterMember is one replica of a cluster.
type ClusterMember struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Role is "voter" or "nonvoter" (a replica catching up after it
	// joined).
	Role string `json:"role"`
	// State is "leader", "follower", "candidate", "shutdown", or
	// "unreachable" when it did not answer the replica asked.
	State string `json:"state"`
	// AppliedIndex is the last Raft log index the replica applied.
	AppliedIndex uint64 `json:"applied_index"`
	// LastContact is when the replica last heard from the leader (the
	// leader: the time of the answer), RFC 3339; "" when unknown.
	LastContact string `json:"last_contact,omitempty"`
}
