package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// The cluster's own RPCs on the replicas' channel: one JSON request and
// one JSON response per connection.
//
//	{"op":"status"}                          → {"status": Member}
//	{"op":"join","id":ID,"address":ADDR}     → {} once ID is a voter
//
// A request to a replica that is not the leader, for what only the leader
// does, is answered {"error": ..., "leader": ADDRESS} so the caller can
// go there.

// maxRPCRequest bounds one request.
const maxRPCRequest = 64 << 10

// statusTimeout bounds one status call to another replica.
const statusTimeout = 2 * time.Second

type rpcRequest struct {
	Op      string `json:"op"`
	ID      string `json:"id,omitempty"`
	Address string `json:"address,omitempty"`
}

type rpcResponse struct {
	Error  string  `json:"error,omitempty"`
	Leader string  `json:"leader,omitempty"`
	Status *Member `json:"status,omitempty"`
}

// Member is one replica as GET /api/v1/cluster shows it.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Role is "voter" or "nonvoter".
	Role string `json:"role"`
	// State is "leader", "follower", "candidate", "shutdown", or
	// "unreachable" when it did not answer.
	State        string `json:"state"`
	AppliedIndex uint64 `json:"applied_index"`
	// LastContact is when the member last heard from the leader (the
	// leader: now), empty when never or unknown.
	LastContact string `json:"last_contact,omitempty"`
}

// Status is the cluster as one replica sees it.
type Status struct {
	Leader  string   `json:"leader"`
	Term    uint64   `json:"term"`
	Members []Member `json:"members"`
}

// decodeRequest parses one request (outside input: fuzzed).
func decodeRequest(data []byte) (rpcRequest, error) {
	var req rpcRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("cluster: bad request: %w", err)
	}
	switch req.Op {
	case "status":
	case "join":
		if err := validID(req.ID); err != nil {
			return req, err
		}
		if _, _, err := net.SplitHostPort(req.Address); err != nil {
			return req, fmt.Errorf("cluster: bad request: address %q: %w", req.Address, err)
		}
	default:
		return req, fmt.Errorf("cluster: bad request: unknown op %q", req.Op)
	}
	return req, nil
}

// serveRPC serves one connection of the replicas' channel.
func (c *Cluster) serveRPC(conn net.Conn) {
	conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	data, err := readLine(conn, maxRPCRequest)
	var resp rpcResponse
	if err == nil {
		var req rpcRequest
		if req, err = decodeRequest(data); err == nil {
			resp = c.handle(req)
		}
	}
	if err != nil {
		resp.Error = err.Error()
	}
	conn.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	json.NewEncoder(conn).Encode(resp)
}

func (c *Cluster) handle(req rpcRequest) rpcResponse {
	switch req.Op {
	case "status":
		m := c.self()
		return rpcResponse{Status: &m}
	case "join":
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.JoinTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.quit:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := c.AddReplica(ctx, req.ID, req.Address); err != nil {
			resp := rpcResponse{Error: err.Error()}
			if errors.Is(err, ErrNotLeader) {
				_, resp.Leader = c.Leader()
			}
			return resp
		}
	}
	return rpcResponse{}
}

// call sends one request to the replica at address.
func (c *Cluster) call(ctx context.Context, address string, req rpcRequest) (rpcResponse, error) {
	conn, err := c.layer.dial(address, statusTimeout, muxRPC)
	if err != nil {
		return rpcResponse{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return rpcResponse{}, err
	}
	var resp rpcResponse
	if err := json.NewDecoder(io.LimitReader(conn, maxRPCRequest)).Decode(&resp); err != nil {
		return rpcResponse{}, err
	}
	return resp, nil
}

// self is this replica's own member entry.
func (c *Cluster) self() Member {
	m := Member{ID: c.cfg.ID, Address: c.Address(), State: "shutdown", AppliedIndex: c.applied.Load()}
	r := c.raft()
	if r == nil {
		return m
	}
	m.State = stateName(r.State())
	m.AppliedIndex = r.AppliedIndex()
	switch {
	case r.State() == raft.Leader:
		m.LastContact = time.Now().UTC().Format(time.RFC3339Nano)
	default:
		if t := r.LastContact(); !t.IsZero() {
			m.LastContact = t.UTC().Format(time.RFC3339Nano)
		}
	}
	return m
}

func stateName(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "shutdown"
}

// Status returns the cluster as this replica sees it, asking each other
// member for its own state (statusTimeout each).
func (c *Cluster) Status(ctx context.Context) (Status, error) {
	r := c.raft()
	if r == nil {
		return Status{}, errors.New("cluster: not started")
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return Status{}, err
	}
	st := Status{Term: r.CurrentTerm()}
	st.Leader, _ = c.Leader()
	for _, s := range f.Configuration().Servers {
		role := "voter"
		if s.Suffrage != raft.Voter {
			role = "nonvoter"
		}
		var m Member
		if string(s.ID) == c.cfg.ID {
			m = c.self()
		} else {
			cctx, cancel := context.WithTimeout(ctx, statusTimeout)
			resp, err := c.call(cctx, string(s.Address), rpcRequest{Op: "status"})
			cancel()
			if err == nil && resp.Status != nil {
				m = *resp.Status
			} else {
				m = Member{State: "unreachable"}
			}
		}
		m.ID, m.Address, m.Role = string(s.ID), string(s.Address), role
		st.Members = append(st.Members, m)
	}
	return st, nil
}

// AddReplica adds the replica id at address, on the leader: as a
// non-voter first, then, once it has applied everything the leader had
// applied when it was added, as a voter. It returns once the replica
// votes, or when ctx ends (the replica then stays a non-voter).
func (c *Cluster) AddReplica(ctx context.Context, id, address string) error {
	r := c.raft()
	if r == nil || r.State() != raft.Leader {
		return c.notLeader()
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id && string(s.Address) == address && s.Suffrage == raft.Voter {
			return nil // already in
		}
	}
	if err := r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(address), 0, c.cfg.ApplyTimeout).Error(); err != nil {
		return c.raftErr("add non-voter", err)
	}
	target := r.AppliedIndex()
	c.log.Info("replica joining as a non-voter", "id", id, "address", address, "catch_up_to", target)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, statusTimeout)
		resp, err := c.call(cctx, address, rpcRequest{Op: "status"})
		cancel()
		if err == nil && resp.Status != nil && resp.Status.AppliedIndex >= target {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: replica %s did not catch up (index %d) before the join timed out: it stays a non-voter: %w", id, target, ctx.Err())
		case <-t.C:
		}
		if r.State() != raft.Leader {
			return c.notLeader()
		}
	}
	if err := r.AddVoter(raft.ServerID(id), raft.ServerAddress(address), 0, c.cfg.ApplyTimeout).Error(); err != nil {
		return c.raftErr("promote to voter", err)
	}
	c.log.Info("replica is a voter", "id", id, "address", address)
	return nil
}

func (c *Cluster) raftErr(what string, err error) error {
	if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
		return fmt.Errorf("%w: %s: %v", c.notLeader(), what, err)
	}
	return fmt.Errorf("cluster: %s: %w", what, err)
}

// Join asks the cluster, through the member at address (any member: a
// follower names the leader, which is asked in turn), to add this
// replica, and returns once it is a voter. Start must have been called.
func (c *Cluster) Join(ctx context.Context, address string) error {
	req := rpcRequest{Op: "join", ID: c.cfg.ID, Address: c.Address()}
	for hops := 0; hops < 5; hops++ {
		resp, err := c.call(ctx, address, req)
		if err != nil {
			return fmt.Errorf("cluster: join through %s: %w", address, err)
		}
		if resp.Error == "" {
			return nil
		}
		if resp.Leader == "" || resp.Leader == address {
			return fmt.Errorf("cluster: join through %s: %s", address, resp.Error)
		}
		address = resp.Leader
	}
	return errors.New("cluster: join: no leader found")
}

// RemoveReplica removes a replica from the cluster (on the leader).
func (c *Cluster) RemoveReplica(id string) error {
	r := c.raft()
	if r == nil || r.State() != raft.Leader {
		return c.notLeader()
	}
	if err := r.RemoveServer(raft.ServerID(id), 0, c.cfg.ApplyTimeout).Error(); err != nil {
		return c.raftErr("remove "+strconv.Quote(id), err)
	}
	return nil
}

// readLine reads up to a newline, at most max bytes.
func readLine(r io.Reader, max int) ([]byte, error) {
	buf := make([]byte, 0, 512)
	var b [1]byte
	for len(buf) < max {
		if _, err := r.Read(b[:]); err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			return buf, nil
		}
		buf = append(buf, b[0])
	}
	return nil, fmt.Errorf("cluster: request over %d bytes", max)
}
