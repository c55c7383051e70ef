package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/certs"
	"github.com/strata-dm/strata/node/store"
)

// tnode is one node of an in-process federation: a model on an in-memory
// store, its CA and its federation service.
type tnode struct {
	t      *testing.T
	name   string
	store  *store.Badger
	model  *model.Model
	svc    *federation.Service
	ca     *certs.Pair
	dir    string
	listen bool
	local  *echoLocal
	ups    []federation.Upstream
	// certValidity, when set, is the lifetime of certificates this node
	// issues to providers.
	certValidity time.Duration
	// configure, when set, changes the configuration before each start.
	configure func(*federation.Config)
}

// echoLocal answers calls with what it received, and reads from the model.
type echoLocal struct {
	node  string
	model *model.Model
	mu    sync.Mutex
	calls []federation.CallRequest
}

func (l *echoLocal) Call(ctx context.Context, consumer string, req federation.CallRequest) (federation.CallResult, error) {
	if _, err := l.model.Get(req.Path); err != nil {
		return federation.CallResult{}, err
	}
	l.mu.Lock()
	l.calls = append(l.calls, req)
	l.mu.Unlock()
	if req.Function == "slow" {
		<-ctx.Done()
		// Cleaning up after the cancellation takes a while.
		<-time.After(100 * time.Millisecond)
		return federation.CallResult{}, ctx.Err()
	}
	res, _ := json.Marshal(map[string]any{"node": l.node, "function": req.Function, "args": req.Args, "via": req.Identity.Via, "user": req.Identity.User})
	return federation.CallResult{Job: "j-" + l.node, State: "succeeded", Result: res}, nil
}

func (l *echoLocal) Job(ctx context.Context, consumer string, id federation.Identity, jobID string) (federation.CallResult, error) {
	if jobID != "j-"+l.node {
		return federation.CallResult{}, fmt.Errorf("%w: job %s", model.ErrNotFound, jobID)
	}
	return federation.CallResult{Job: jobID, State: "running", Path: "/devices/pump-12"}, nil
}

func (l *echoLocal) Get(ctx context.Context, consumer string, id federation.Identity, p model.Path) (*model.Context, error) {
	return l.model.Get(p)
}

// newTNode starts a node; listen gives it a federation listener.
func newTNode(t *testing.T, name string, listen bool) *tnode {
	t.Helper()
	s, err := store.OpenBadger(store.BadgerOptions{InMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := certs.NewCA(name + " CA")
	if err != nil {
		t.Fatal(err)
	}
	n := &tnode{t: t, name: name, store: s, model: m, ca: ca, dir: t.TempDir(), listen: listen, local: &echoLocal{node: name, model: m}}
	n.start()
	t.Cleanup(func() {
		n.stop()
		n.model.Close()
		s.Close()
	})
	return n
}

func (n *tnode) start() {
	n.t.Helper()
	cfg := federation.Config{
		Name: n.name, Model: n.model, Logger: tstest.Logger(n.t), CA: n.ca.Cert, CAKey: n.ca.Key,
		StateDir: n.dir, Local: n.local, Upstreams: n.ups,
		KeepAlive: 500 * time.Millisecond, IdleTimeout: 3 * time.Second,
		CertValidity: n.certValidity,
	}
	if n.listen {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if n.configure != nil {
		n.configure(&cfg)
	}
	svc, err := federation.New(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		n.t.Fatal(err)
	}
	n.svc = svc
}

// restart stops the federation and the model and starts them again on
// the same store (the model's in-memory log tail is gone after it).
func (n *tnode) restart() {
	n.t.Helper()
	n.stop()
	n.model.Close()
	m, err := model.New(model.Config{Store: n.store})
	if err != nil {
		n.t.Fatal(err)
	}
	n.model, n.local.model = m, m
	n.start()
}

func (n *tnode) stop() {
	if n.svc != nil {
		n.svc.Close()
		n.svc = nil
	}
}

// join makes provider p publish to consumer n with the grant.
func (n *tnode) join(p *tnode, grant string, publish ...model.Path) {
	n.t.Helper()
	tok, _, err := n.svc.CreateJoinToken(context.Background(), federation.JoinGrant{Peer: p.name, Grant: grant})
	if err != nil {
		n.t.Fatal(err)
	}
	p.ups = append(p.ups, federation.Upstream{Address: n.svc.Addr(), Token: tok, Publish: publish})
	if err := p.svc.SetUpstreams(p.ups); err != nil {
		n.t.Fatal(err)
	}
}

func (n *tnode) put(path string, vars map[string]string) {
	n.t.Helper()
	mu := model.Mutation{Op: model.OpPut, Path: model.MustPath(path), Type: "device", Tenant: "acme", Variables: map[string]model.Variable{}}
	for k, v := range vars {
		mv, err := model.NewVariable(json.RawMessage(v), time.Time{})
		if err != nil {
			n.t.Fatal(err)
		}
		mv.Time = time.Time{}
		mu.Variables[k] = mv
	}
	if _, err := n.model.Apply(context.Background(), mu); err != nil {
		n.t.Fatal(err)
	}
}

func (n *tnode) event(path, name string) {
	n.t.Helper()
	if _, err := n.model.Apply(context.Background(), model.Mutation{Op: model.OpEvent, Path: model.MustPath(path), Event: &model.Event{Name: name, Level: model.LevelAlert}}); err != nil {
		n.t.Fatal(err)
	}
}

func (n *tnode) has(path string, check func(*model.Context) bool) bool {
	c, err := n.model.Get(model.MustPath(path))
	return err == nil && (check == nil || check(c))
}

func varIs(name, value string) func(*model.Context) bool {
	return func(c *model.Context) bool {
		v, ok := c.Variables[name]
		return ok && string(v.Value) == value
	}
}

func (n *tnode) verifyAll(t *testing.T) {
	t.Helper()
	res, err := n.svc.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if !r.Match {
			t.Fatalf("%s: mount %s does not match: %+v", n.name, r.Mount, r)
		}
	}
}

func (n *tnode) peer(name, direction string) federation.PeerStatus {
	for _, p := range n.svc.Peers() {
		if (p.Name == name || p.Address == name) && p.Direction == direction {
			return p
		}
	}
	return federation.PeerStatus{}
}

// tree builds depth levels below a root, each node with fanout
// providers; leaves have no listener. It returns the root and the leaves.
func tree(t *testing.T, depth, fanout int) (*tnode, []*tnode) {
	root := newTNode(t, "hq", true)
	level := []*tnode{root}
	for d := 1; d <= depth; d++ {
		var next []*tnode
		for i, parent := range level {
			for j := 0; j < fanout; j++ {
				name := fmt.Sprintf("n%d-%d-%d", d, i, j)
				c := newTNode(t, name, d < depth)
				parent.join(c, federation.GrantOperate)
				next = append(next, c)
			}
		}
		level = next
	}
	return root, level
}

// mountedPath is where root sees path of leaf, given the chain of names.
func mountedPath(chain []string, path string) string {
	var b strings.Builder
	for _, n := range chain {
		b.WriteString("/peers/" + n)
	}
	return b.String() + path
}
