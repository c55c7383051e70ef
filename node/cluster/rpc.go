package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

// The cluster's own RPCs on the replicas' channel: one request and one
// response per connection, each a frame: u32 length (big endian), then
// that many bytes of JSON.
//
//	{"op":"status"}                          → {"status": Member, "position": logPosition}
//	{"op":"join","id":ID,"address":ADDR}     → {} once ID is a voter
//	{"op":"apply","mutations":CBOR}          → {"entries": CBOR} (forward.go)
//	{"op":"transfer"}                        → {} once another replica leads
//	{"op":"remove","id":ID}                  → {} once ID is out of the configuration
//
// A request to a replica that is not the leader, for what only the leader
// does, is answered {"error": ..., "code": "not_leader", "leader":
// ADDRESS} so the caller can go there.

// maxRPCRequest bounds one request or response frame.
const maxRPCRequest = 64 << 20

// statusTimeout bounds one status call to another replica.
const statusTimeout = 2 * time.Second

type rpcRequest struct {
	Op        string `json:"op"`
	ID        string `json:"id,omitempty"`
	Address   string `json:"address,omitempty"`
	Mutations []byte `json:"mutations,omitempty"` // apply: CBOR []model.Mutation
}

type rpcResponse struct {
	Error   string  `json:"error,omitempty"`
	Code    string  `json:"code,omitempty"` // the error's class (forward.go)
	Leader  string  `json:"leader,omitempty"`
	Status  *Member `json:"status,omitempty"`
	Entries []byte  `json:"entries,omitempty"` // apply: CBOR []model.Entry
	Index   uint64  `json:"index,omitempty"`   // read_index: the leader's read index
	// Position is the replica's last Raft log entry (status; leaderloss.go).
	Position *logPosition `json:"position,omitempty"`
}

// Member is one replica as GET /api/v1/cluster shows it.
type Member = apitypes.ClusterMember

// Status is the cluster as one replica sees it.
type Status = apitypes.ClusterStatus

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
	case "apply":
		if len(req.Mutations) == 0 {
			return req, errors.New("cluster: bad request: apply without mutations")
		}
	case "transfer", "read_index":
	case "remove":
		if err := validID(req.ID); err != nil {
			return req, err
		}
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
	data, err := readFrame(conn, maxRPCRequest)
	conn.SetReadDeadline(time.Time{})
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
	writeFrame(conn, resp)
}

func (c *Cluster) handle(req rpcRequest) rpcResponse {
	switch req.Op {
	case "status":
		m := c.self()
		return rpcResponse{Status: &m, Position: c.position()}
	case "apply":
		return c.serveApply(req)
	case "read_index":
		idx, err := c.readIndexHere()
		if err != nil {
			return rpcResponse{Error: err.Error(), Code: errorCode(err)}
		}
		return rpcResponse{Index: idx}
	case "transfer", "remove":
		var err error
		if req.Op == "transfer" {
			err = c.transferHere()
		} else {
			err = c.removeHere(req.ID)
		}
		if err != nil {
			resp := rpcResponse{Error: err.Error(), Code: errorCode(err)}
			if errors.Is(err, ErrNotLeader) {
				_, resp.Leader = c.Leader()
			}
			return resp
		}
	case "join":
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.JoinTimeout)
		defer cancel()
		ctx, stop := c.untilClosed(ctx)
		defer stop()
		if err := c.AddReplica(ctx, req.ID, req.Address); err != nil {
			resp := rpcResponse{Error: err.Error(), Code: errorCode(err)}
			if errors.Is(err, ErrNotLeader) {
				_, resp.Leader = c.Leader()
			}
			return resp
		}
	}
	return rpcResponse{}
}

// call sends one request to the replica at address, until ctx ends (the
// connection: within statusTimeout too).
func (c *Cluster) call(ctx context.Context, address string, req rpcRequest) (rpcResponse, error) {
	dctx, cancel := context.WithTimeout(ctx, statusTimeout)
	conn, err := c.layer.dialContext(dctx, address, muxRPC)
	cancel()
	if err != nil {
		return rpcResponse{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := writeFrame(conn, req); err != nil {
		return rpcResponse{}, err
	}
	data, err := readFrame(conn, maxRPCRequest)
	if err != nil {
		return rpcResponse{}, err
	}
	var resp rpcResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return rpcResponse{}, fmt.Errorf("cluster: bad response: %w", err)
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
//
// While the cluster has no leader (an election), or the leader changes
// during the join, it asks again every joinRetry until ctx ends.
func (c *Cluster) Join(ctx context.Context, address string) error {
	req := rpcRequest{Op: "join", ID: c.cfg.ID, Address: c.Address()}
	via := address
	t := time.NewTicker(joinRetry)
	defer t.Stop()
	for {
		resp, err := c.call(ctx, via, req)
		switch {
		case err == nil && resp.Error == "":
			return nil
		case err == nil && resp.Code != "not_leader":
			return fmt.Errorf("cluster: join through %s: %s", via, resp.Error)
		case err == nil && resp.Leader != "" && resp.Leader != via:
			via = resp.Leader // go to the leader at once
			continue
		case err != nil && via == address:
			return fmt.Errorf("cluster: join through %s: %w", via, err)
		}
		// No leader known, or the one named did not answer: ask the
		// member we were given again.
		via = address
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New(resp.Error)
			}
			return fmt.Errorf("cluster: join through %s: %w (last: %v)", address, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// joinRetry is how often Join asks again while the cluster has no leader.
const joinRetry = 100 * time.Millisecond

// RemoveReplica removes the replica id from the cluster (strata cluster
// leave), through the leader wherever it is asked. The removed replica
// stops taking part; remove the leader itself and another is elected.
// An id that is not a member is model.ErrNotFound.
func (c *Cluster) RemoveReplica(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return fmt.Errorf("%w: %v", model.ErrInvalid, err)
	}
	return c.onLeader(ctx, rpcRequest{Op: "remove", ID: id}, func() error { return c.removeHere(id) })
}

// TransferLeadership hands leadership from the leader to another voter
// (strata cluster transfer-leader), wherever it is asked.
func (c *Cluster) TransferLeadership(ctx context.Context) error {
	return c.onLeader(ctx, rpcRequest{Op: "transfer"}, c.transferHere)
}

// onLeader runs here when this replica leads, else asks the leader.
func (c *Cluster) onLeader(ctx context.Context, req rpcRequest, here func() error) error {
	r := c.raft()
	if r == nil {
		return errors.New("cluster: not started")
	}
	if r.State() == raft.Leader {
		return here()
	}
	id, addr := c.Leader()
	if id == "" {
		return c.notLeader()
	}
	resp, err := c.call(ctx, addr, req)
	if err != nil {
		return fmt.Errorf("%w: ask %s at %s: %v", ErrNotLeader, id, addr, err)
	}
	if resp.Error != "" {
		return codeError(resp.Code, resp.Error)
	}
	return nil
}

func (c *Cluster) removeHere(id string) error {
	r := c.raft()
	if r == nil || r.State() != raft.Leader {
		return c.notLeader()
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	known := false
	for _, s := range f.Configuration().Servers {
		known = known || string(s.ID) == id
	}
	if !known {
		return fmt.Errorf("%w: replica %q is not a member", model.ErrNotFound, id)
	}
	if err := r.RemoveServer(raft.ServerID(id), 0, c.cfg.ApplyTimeout).Error(); err != nil {
		return c.raftErr("remove "+strconv.Quote(id), err)
	}
	c.log.Info("replica removed", "id", id)
	return nil
}

func (c *Cluster) transferHere() error {
	r := c.raft()
	if r == nil || r.State() != raft.Leader {
		return c.notLeader()
	}
	if err := c.await(r.LeadershipTransfer()); err != nil {
		return c.raftErr("transfer leadership", err)
	}
	return nil
}

// await waits for f, or until the replica closes. Raft answers no future
// still queued for its main loop when it shuts down (a leadership transfer
// asked for just before a stop waits for ever), so the wait ends with the
// replica; the goroutine left on such a future is the price.
func (c *Cluster) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-c.quit:
		return raft.ErrRaftShutdown
	}
}

// writeFrame writes v as one frame.
func writeFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	_, err = w.Write(append(buf, body...))
	return err
}

// readFrame reads one frame of at most max bytes.
func readFrame(r io.Reader, max int) ([]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if int64(n) > int64(max) {
		return nil, fmt.Errorf("cluster: frame of %d bytes, over the %d limit", n, max)
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(int(n), 64<<10)))
	if _, err := io.CopyN(buf, r, int64(n)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
