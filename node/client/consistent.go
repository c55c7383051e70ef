package client

import "net/url"

// Consistent returns a copy of the client whose reads (every GET) are
// linearizable: each asks for ?consistent=true, so that a replica of a
// cluster answers only once it holds every write acknowledged before the
// request, through whichever replica (docs/api.md, "Consistent reads").
// A single node's reads are so already. The copy shares the connections.
func (c *Client) Consistent() *Client {
	n := *c
	n.consistent = true
	return &n
}

// withConsistent is q with consistent=true, q left as it is.
func withConsistent(q url.Values) url.Values {
	n := make(url.Values, len(q)+1)
	for k, v := range q {
		n[k] = v
	}
	n.Set("consistent", "true")
	return n
}
