package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// feedSeqs returns the sequence numbers of the whole feed of s.
func feedSeqs(t *testing.T, s model.EventFeed, q model.FeedQuery) []uint64 {
	t.Helper()
	q.Limit = model.MaxFeedLimit
	page, err := s.Feed(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, ev := range page.Events {
		out = append(out, ev.Seq)
	}
	return out
}

func recordEvent(t *testing.T, m *model.Model, p model.Path, l model.Level) uint64 {
	t.Helper()
	es, err := m.Apply(context.Background(), model.Mutation{Op: model.OpEvent, Path: p, Event: &model.Event{Name: "x", Level: l}})
	if err != nil {
		t.Fatal(err)
	}
	return es[0].Seq
}

// A store written before the feed index existed (no feed keys, no
// keyFeedIndex) gets it built at open; a second open leaves it be.
func TestBadgerFeedIndexBuiltAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, m := openWithModel(t, dir, nil)
	putContext(t, m, "/d")
	var want []uint64
	for i := range 30 {
		seq := recordEvent(t, m, "/d", []model.Level{model.LevelInfo, model.LevelWarning, model.LevelAlert}[i%3])
		if i%3 != 0 {
			want = append([]uint64{seq}, want...)
		}
	}
	m.Close()
	err := s.db.Update(func(txn *badger.Txn) error {
		for _, p := range []byte{pFeed, pFeedTenant} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{p}})
			var keys [][]byte
			for it.Rewind(); it.Valid(); it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
		}
		return txn.Delete(keyFeedIndex)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := feedSeqs(t, s, model.FeedQuery{}); len(got) != 0 {
		t.Fatalf("feed keys left: %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestBadger(t, dir, nil)
	defer s2.Close()
	if got := feedSeqs(t, s2, model.FeedQuery{}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("feed after rebuild = %v, want %v", got, want)
	}
	if got := feedSeqs(t, s2, model.FeedQuery{Tenants: []string{""}}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("shared feed after rebuild = %v, want %v", got, want)
	}
}

// Feed keys lost with Badger's unsynced writes come back from the
// write-ahead log with their events, and a deletion lost the same way
// takes them away again.
func TestBadgerFeedSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	s, m := openWithModel(t, dir, nil)
	putContext(t, m, "/d")
	putContext(t, m, "/gone")
	old := recordEvent(t, m, "/gone", model.LevelAlert)
	if err := s.trimWAL(true); err != nil {
		t.Fatal(err)
	}
	s.loseWrites = true
	w := recordEvent(t, m, "/d", model.LevelWarning)
	if _, err := m.Apply(context.Background(), model.Mutation{Op: model.OpDelete, Path: "/gone"}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	crash(t, s)
	s2 := openTestBadger(t, dir, nil)
	defer s2.Close()
	if got := feedSeqs(t, s2, model.FeedQuery{}); fmt.Sprint(got) != fmt.Sprint([]uint64{w}) {
		t.Fatalf("feed after crash = %v, want [%d] (not %d)", got, w, old)
	}
}
