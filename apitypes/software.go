package apitypes

import "time"

// CacheTier is one node's artifact cache, as GET /api/v1/software/cache
// lists this node's and every node's below it (docs/software.md).
type CacheTier struct {
	// Node is the node's name; Path where it is seen from the node asked
	// ("/" for itself, /peers/<name>... below).
	Node string `json:"node"`
	Path string `json:"path"`
	Role string `json:"role,omitempty"`
	// BudgetBytes bounds the artifacts fetched from above kept there (0:
	// no bound); UsedBytes and Objects are what it keeps, Pinned the
	// objects no eviction may remove (active rollouts, stagings).
	BudgetBytes int64 `json:"budget_bytes"`
	UsedBytes   int64 `json:"used_bytes"`
	Objects     int   `json:"objects"`
	Pinned      int   `json:"pinned"`
	// Fetching counts fetches from above in progress.
	Fetching int `json:"fetching"`
	// FetchedBytes are the bytes fetched from above, ServedBytes the bytes
	// served to devices and to the tiers below, since the node started.
	FetchedBytes int64 `json:"fetched_bytes"`
	ServedBytes  int64 `json:"served_bytes"`
	// OriginObjects and OriginBytes are the artifacts of releases
	// uploaded to that node (never evicted).
	OriginObjects int       `json:"origin_objects"`
	OriginBytes   int64     `json:"origin_bytes"`
	Updated       time.Time `json:"updated"`
	// Error says why a node below did not answer (its other fields are
	// then empty).
	Error string `json:"error,omitempty"`
}

// CacheTiers is the answer of GET /api/v1/software/cache.
type CacheTiers struct {
	Tiers []CacheTier `json:"tiers"`
}

// StageRequest is the body of POST /api/v1/releases/{name}/{version}/stage:
// the mounted nodes (/peers/<name>, /peers/<a>/peers/<b>, ...) to send the
// release to and have fetch its artifacts now.
type StageRequest struct {
	Peers []string `json:"peers"`
}

// StageResult is one node of a staging: empty Error when the release
// reached it (its artifacts are then fetched in the background; the cache
// listing shows them arrive).
type StageResult struct {
	Peer  string `json:"peer"`
	Error string `json:"error,omitempty"`
}

// StageResults is the answer of a staging.
type StageResults struct {
	Staged []StageResult `json:"staged"`
}
