package storetest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/strata-dm/strata/model"
)

// testUpdateRecord: an OpUpdateRecord is decided against the record as
// the state machine has it, whatever batch it is in and whatever batch is
// being committed meanwhile; it is logged as the put of the value its
// updater returned; a refusal fails the proposal and writes nothing.
func testUpdateRecord(t *testing.T, m *model.Model, s model.Store) {
	ctx := context.Background()
	upd := func(n string) model.Mutation {
		return model.Mutation{Op: model.OpUpdateRecord, Record: &model.Record{Kind: "counter", Key: "c", Value: []byte(n)}}
	}
	if _, err := m.Apply(ctx, upd("1")); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("update of a kind without an updater: %v", err)
	}
	// The counter adds its argument to the current value; it refuses to
	// go past 1000.
	m.RegisterUpdater("counter", func(key string, cur, arg []byte) ([]byte, error) {
		n, _ := strconv.Atoi(string(cur))
		d, err := strconv.Atoi(string(arg))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", model.ErrInvalid, err)
		}
		if n+d > 1000 {
			return nil, fmt.Errorf("%w: %s would pass 1000", model.ErrConflict, key)
		}
		return []byte(strconv.Itoa(n + d)), nil
	})
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if _, err := m.Apply(ctx, upd("2")); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if v, err := s.Record("counter", "c"); err != nil || string(v) != strconv.Itoa(2*writers*each) {
		t.Fatalf("counter = %q, %v; want %d", v, err, 2*writers*each)
	}
	// Later mutations of one proposal see earlier ones; a refusal fails
	// the whole proposal.
	last := m.LastSeq()
	if _, err := m.Apply(ctx, upd("100"), upd("100"), upd("1")); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("update past the limit: %v", err)
	}
	if v, _ := s.Record("counter", "c"); string(v) != "800" || m.LastSeq() != last {
		t.Fatalf("after a refused proposal: counter %q, last seq %d (was %d)", v, m.LastSeq(), last)
	}
	es, err := m.Apply(ctx,
		model.Mutation{Op: model.OpDeleteRecord, Record: &model.Record{Kind: "counter", Key: "c"}},
		upd("5"), upd("5"))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[2].Mutation.Op != model.OpPutRecord || string(es[2].Mutation.Record.Value) != "10" {
		t.Fatalf("entries %+v", es)
	}
	logged, err := m.ReadLog(ctx, es[0].Seq-1, 10)
	if err != nil || len(logged) != 3 {
		t.Fatalf("log: %d entries, %v", len(logged), err)
	}
	for i, e := range logged {
		if e.Mutation.Op == model.OpUpdateRecord {
			t.Errorf("log entry %d is an update", i)
		}
	}
	if r := logged[2].Mutation.Record; r == nil || string(r.Value) != "10" {
		t.Errorf("logged %+v; want the put of 10", logged[2].Mutation)
	}
}
