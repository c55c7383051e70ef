package cluster

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

func testBatch(t testing.TB) *model.Batch {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	c := &model.Context{Path: "/devices/a", Type: "device", Tenant: "t1", Labels: map[string]string{"k": "v"},
		Created: at, Updated: at, Version: 2}
	b := &model.Batch{
		Entries: []model.Entry{
			{Seq: 1, Time: at, Mutation: model.Mutation{Op: model.OpPut, Path: "/devices", Type: model.FolderType}},
			{Seq: 2, Time: at, Mutation: model.Mutation{Op: model.OpPut, Path: "/devices/a", Type: "device", Tenant: "t1"}},
			{Seq: 3, Time: at, Mutation: model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: "k", Key: "x", Value: []byte("v")}}},
		},
		Contexts: []model.ContextWrite{{Context: c, Index: true}},
		Deleted:  []model.Path{"/devices/old"},
		Events:   []model.Event{{Seq: 2, Path: "/devices/a", Level: model.LevelInfo, Time: at, Tenant: "t1"}},
		Records:  []model.Record{{Kind: "k", Key: "x", Value: []byte("v")}},
		Dropped:  []model.Record{{Kind: "k", Key: "y"}},
	}
	return b
}

func TestBatchRoundTrip(t *testing.T) {
	b := testBatch(t)
	data, err := encodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != entryBatch {
		t.Fatalf("kind %d", data[0])
	}
	got, err := decodeBatch(data[0], data[1:])
	if err != nil {
		t.Fatal(err)
	}
	for i := range b.Entries {
		enc, _ := b.EncodedEntry(i)
		if string(enc) != string(got.Encoded[i]) {
			t.Fatalf("entry %d: the replica would store other bytes", i)
		}
	}
	got.Encoded = nil
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("decoded batch differs:\n got %+v\nwant %+v", got, b)
	}
}

func TestDecodeBatchRefuses(t *testing.T) {
	gap := testBatch(t)
	gap.Entries[2].Seq = 5
	zero := testBatch(t)
	for i := range zero.Entries {
		zero.Entries[i].Seq = uint64(i)
	}
	for name, b := range map[string]*model.Batch{"gap": gap, "zero": zero, "empty": {}} {
		data, err := encodeBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeBatch(data[0], data[1:]); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: %v, want ErrBadEntry", name, err)
		}
	}
	if _, err := decodeBatch(entryBatch, []byte{0xff, 0x00}); !errors.Is(err, ErrBadEntry) {
		t.Errorf("garbage: %v", err)
	}
	// A chained batch read as a plain one, or the other way round.
	chained := testBatch(t)
	chained.After = 7
	data, err := encodeBatch(chained)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeBatch(entryBatch, data[1:]); !errors.Is(err, ErrBadEntry) {
		t.Errorf("chained body as a plain batch: %v", err)
	}
	data, _ = encodeBatch(testBatch(t))
	if _, err := decodeBatch(entryChained, data[1:]); !errors.Is(err, ErrBadEntry) {
		t.Errorf("plain body as a chained batch: %v", err)
	}
}

// A batch built on another in flight is written as its own kind, so that
// an older replica refuses it, and keeps its chain through the log.
func TestChainedBatchRoundTrip(t *testing.T) {
	b := testBatch(t)
	b.ID, b.After = 42, 41
	data, err := encodeBatch(b)
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != entryChained {
		t.Fatalf("kind %d, want %d", data[0], entryChained)
	}
	got, err := decodeBatch(data[0], data[1:])
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != 42 || got.After != 41 {
		t.Fatalf("id %d after %d", got.ID, got.After)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	data, err := encodeBatch(testBatch(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(entryBatch, data[1:])
	f.Add(entryChained, []byte{0xa0})
	f.Fuzz(func(t *testing.T, kind byte, body []byte) {
		b, err := decodeBatch(kind, body)
		if err != nil {
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("error not ErrBadEntry: %v", err)
			}
			return
		}
		if (b.After != 0) != (kind == entryChained) {
			t.Fatal("accepted a chain that does not match the kind")
		}
		for i := 1; i < len(b.Entries); i++ {
			if b.Entries[i].Seq != b.Entries[i-1].Seq+1 {
				t.Fatal("accepted entries out of order")
			}
		}
		for _, cw := range b.Contexts {
			if cw.Context == nil {
				t.Fatal("accepted a context write without a context")
			}
		}
	})
}
