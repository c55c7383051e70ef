package federation_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// artifactLocal serves artifacts to the providers allowed each, and
// records the releases sent to it.
type artifactLocal struct {
	*echoLocal
	mu       sync.Mutex
	objects  map[string][]byte
	allowed  map[string]map[string]bool // provider -> sums
	releases []string
}

func (l *artifactLocal) OpenArtifact(ctx context.Context, provider, sum string, offset int64) (io.ReadCloser, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.objects[sum]
	if !ok || !l.allowed[provider][sum] {
		return nil, 0, fmt.Errorf("%w: artifact %s", model.ErrNotFound, sum)
	}
	if offset > int64(len(b)) {
		return nil, 0, fmt.Errorf("%w: offset", model.ErrInvalid)
	}
	return io.NopCloser(bytes.NewReader(b[offset:])), int64(len(b)), nil
}

func (l *artifactLocal) Release(ctx context.Context, consumer string, id federation.Identity, body []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releases = append(l.releases, consumer+":"+id.User+":"+string(body))
	return nil
}

func withArtifacts(n *tnode) *artifactLocal {
	al := &artifactLocal{echoLocal: n.local, objects: map[string][]byte{}, allowed: map[string]map[string]bool{}}
	n.configure = func(c *federation.Config) { c.Local = al }
	n.stop()
	n.start()
	return al
}

func TestArtifactFetch(t *testing.T) {
	hq := newTNode(t, "hq", true)
	al := withArtifacts(hq)
	probe := newTNode(t, "probe", false)
	hq.join(probe, federation.GrantOperate)
	tstest.WaitFor(t, 10*time.Second, "link up", func() bool { return probe.peer("hq", "consumer").State == "connected" })

	data := make([]byte, 3<<20+17)
	rand.Read(data)
	al.mu.Lock()
	al.objects["aa"], al.objects["bb"] = data, []byte("secret")
	al.allowed["probe"] = map[string]bool{"aa": true}
	al.mu.Unlock()
	ctx := context.Background()

	fetch := func(sum string, off int64) ([]byte, int64, error) {
		rc, size, err := probe.svc.Fetch(ctx, "hq", sum, off)
		if err != nil {
			return nil, 0, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return b, size, err
	}
	got, size, err := fetch("aa", 0)
	if err != nil || size != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("fetch: %d bytes of %d, err %v", len(got), size, err)
	}
	// Resumed from an offset: the rest only.
	got, _, err = fetch("aa", 1<<20)
	if err != nil || !bytes.Equal(got, data[1<<20:]) {
		t.Fatalf("resumed fetch: %d bytes, err %v", len(got), err)
	}
	// What the consumer does not allow this provider is not found.
	if _, _, err := fetch("bb", 0); !errors.Is(err, model.ErrNotFound) {
		t.Fatalf("fetch of an artifact not allowed: %v", err)
	}
	if _, _, err := probe.svc.Fetch(ctx, "elsewhere", "aa", 0); !errors.Is(err, federation.ErrUnreachable) {
		t.Fatalf("fetch from a consumer this node has no link to: %v", err)
	}
	// A reader closed early ends the stream, and the link stays usable.
	rc, _, err := probe.svc.Fetch(ctx, "hq", "aa", 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [1024]byte
	if _, err := io.ReadFull(rc, one[:]); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got, _, err := fetch("aa", int64(len(data))-5); err != nil || !bytes.Equal(got, data[len(data)-5:]) {
		t.Fatalf("fetch after a cut: %q %v", got, err)
	}

	// A link that is down answers ErrUnreachable.
	hq.stop()
	tstest.WaitFor(t, 20*time.Second, "link down", func() bool { return probe.peer("hq", "consumer").State != "connected" })
	if _, _, err := fetch("aa", 0); !errors.Is(err, federation.ErrUnreachable) {
		t.Fatalf("fetch over a link that is down: %v", err)
	}
}

func TestReleaseRequestNeedsOperate(t *testing.T) {
	hq := newTNode(t, "hq", true)
	for _, c := range []struct {
		grant string
		ok    bool
	}{{federation.GrantOperate, true}, {federation.GrantRead, false}} {
		p := newTNode(t, "p-"+c.grant, false)
		al := withArtifacts(p)
		hq.join(p, c.grant)
		tstest.WaitFor(t, 10*time.Second, "link up", func() bool { return hq.peer(p.name, "provider").State == "connected" })
		err := hq.svc.Release(context.Background(), p.name, federation.Identity{User: "admin", System: true}, []byte(`{"x":1}`))
		al.mu.Lock()
		got := al.releases
		al.mu.Unlock()
		if c.ok {
			if err != nil || len(got) != 1 || got[0] != `hq:admin:{"x":1}` {
				t.Fatalf("%s: release: %v, received %q", c.grant, err, got)
			}
			continue
		}
		if !errors.Is(err, federation.ErrForbidden) || len(got) != 0 {
			t.Fatalf("%s: release: %v, received %q", c.grant, err, got)
		}
	}
}
