package jobs

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/model"
)

// Two services over one log stand for two replicas of a cluster: each
// follows the log (as the node does, from a goroutine of its own), so a
// job created or changed through one is known to the other, which
// delivers a new job to its devices; nobody delivers twice, and a
// replica's own writes are not taken back by older entries.
func TestFollow(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	var mu sync.Mutex
	delivered := map[string][]string{}
	deliverer := func(name string) func(Job) {
		return func(j Job) { mu.Lock(); delivered[name] = append(delivered[name], j.ID); mu.Unlock() }
	}
	never := func() bool { return false }
	a, err := New(Config{Records: m, Deliver: deliverer("a"), Leading: never})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(Config{Records: m, Deliver: deliverer("b"), Leading: never})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	queue := make(chan []model.Entry, 1024)
	m.OnCommit(func(es []model.Entry) { queue <- slices.Clone(es) })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for es := range queue {
			a.Follow(es)
			b.Follow(es)
		}
	}()
	defer func() { close(queue); <-done }()
	ctx := context.Background()
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/d1", Type: "device"}); err != nil {
		t.Fatal(err)
	}

	j, err := a.Create(ctx, Spec{Path: "/devices/d1", Device: "d1", Tenant: "t", Function: "ping", By: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "b knows the job and delivered it", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(b.Pending("d1")) == 1 && slices.Equal(delivered["b"], []string{j.ID})
	})
	if err := a.MarkDelivered(ctx, "d1", j.ID); err != nil {
		t.Fatal(err)
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "b sees it delivered", func() bool {
		got, err := b.Get(j.ID)
		return err == nil && got.State == Delivered
	})
	// b takes the device's answer (the device is connected to b).
	waited := make(chan Job, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, tstest.DefaultTimeout)
		defer cancel()
		got, _ := a.Wait(ctx, j.ID)
		waited <- got
	}()
	if err := b.Report(ctx, "d1", j.ID, Succeeded, []byte(`{"ok":true}`), ""); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-waited:
		if got.State != Succeeded {
			t.Fatalf("a's waiter got %s", got.State)
		}
	case <-time.After(tstest.DefaultTimeout):
		t.Fatal("a's waiter was not woken by the job finishing through b")
	}
	tstest.WaitFor(t, tstest.DefaultTimeout, "no active job left on either", func() bool {
		return a.Active() == 0 && b.Active() == 0
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(delivered["a"], []string{j.ID}) || !slices.Equal(delivered["b"], []string{j.ID}) {
		t.Fatalf("deliveries %v: want one per replica", delivered)
	}
}
