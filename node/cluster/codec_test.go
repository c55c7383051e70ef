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
	got, err := decodeBatch(data[1:])
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
		if _, err := decodeBatch(data[1:]); !errors.Is(err, ErrBadEntry) {
			t.Errorf("%s: %v, want ErrBadEntry", name, err)
		}
	}
	if _, err := decodeBatch([]byte{0xff, 0x00}); !errors.Is(err, ErrBadEntry) {
		t.Errorf("garbage: %v", err)
	}
}

func FuzzDecodeBatch(f *testing.F) {
	data, err := encodeBatch(testBatch(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data[1:])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := decodeBatch(body)
		if err != nil {
			if !errors.Is(err, ErrBadEntry) {
				t.Fatalf("error not ErrBadEntry: %v", err)
			}
			return
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
