package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// The event feed index (model.EventFeed). Each notable event (level
// warning or alert) gets two keys beside its e key, written in the same
// transaction and deleted with it (by a context's deletion or by
// PruneEvents):
//
//	w <seq:8 BE>                  every notable event, for system readers
//	W <tenant> 0x00 <seq:8 BE>    the notable events of one tenant ("" shared)
//
// Both hold the same small reference (CBOR model.Event with Path, Level
// and Tenant only); the event itself is read from its e key. A feed for a
// tenant user merges its tenant's keys with the shared ones, newest
// first, so it never reads another tenant's events, and its cursor never
// names one. The subtree is a filter on the reference's path.
//
// keyFeedIndex holds the index's version; a store without it (written
// before the index, or interrupted while building it) builds the index at
// open from its e keys, before serving.
const (
	pFeed       = 'w'
	pFeedTenant = 'W'
)

const feedIndexVersion = 1

// Interface guard.
var _ model.EventFeed = (*Badger)(nil)

var keyFeedIndex = []byte("mfeed-index")

func feedKey(seq uint64) []byte { return append([]byte{pFeed}, seqBytes(seq)...) }

func feedTenantPrefix(tenant string) []byte {
	k := append([]byte{pFeedTenant}, tenant...)
	return append(k, 0)
}

func feedTenantKey(tenant string, seq uint64) []byte {
	return append(feedTenantPrefix(tenant), seqBytes(seq)...)
}

// feedRef is the value of a feed key.
func feedRef(ev *model.Event) ([]byte, error) {
	return model.Marshal(&model.Event{Path: ev.Path, Level: ev.Level, Tenant: ev.Tenant})
}

// putFeed writes the feed keys of ev when it is notable.
func putFeed(w *txnWriter, ev *model.Event) error {
	if !model.Notable(ev.Level) {
		return nil
	}
	ref, err := feedRef(ev)
	if err != nil {
		return err
	}
	if err := w.set(feedKey(ev.Seq), ref); err != nil {
		return err
	}
	return w.set(feedTenantKey(ev.Tenant, ev.Seq), ref)
}

// feedKeys returns the feed keys of ev (none when it is not notable).
func feedKeys(ev *model.Event) [][]byte {
	if !model.Notable(ev.Level) {
		return nil
	}
	return [][]byte{feedKey(ev.Seq), feedTenantKey(ev.Tenant, ev.Seq)}
}

// delEvents deletes p's events and their feed keys.
func delEvents(w *txnWriter, p model.Path) error {
	var keys [][]byte
	err := w.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: eventPrefix(p), PrefetchValues: true})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var ev model.Event
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
				return fmt.Errorf("decode event %q: %w", it.Item().Key(), err)
			}
			keys = append(keys, feedKeys(&ev)...)
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := w.del(k); err != nil {
			return err
		}
	}
	return nil
}

// openFeedIndex builds the feed index at open when keyFeedIndex says it
// is missing or of another version.
func (s *Badger) openFeedIndex() error {
	return s.openIndex("event feed", "events", keyFeedIndex, feedIndexVersion, s.buildFeedIndex)
}

// buildFeedIndex drops every feed key, writes those of every notable
// event, then keyFeedIndex, each step synced before the next relies on
// it, so an interrupted build starts over at the next open.
func (s *Badger) buildFeedIndex() (int, error) {
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(keyFeedIndex) }); err != nil {
		return 0, err
	}
	if err := s.syncAll(); err != nil {
		return 0, err
	}
	for _, p := range []byte{pFeed, pFeedTenant} {
		if err := s.dropPrefix([]byte{p}); err != nil {
			return 0, err
		}
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pEvent}, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var ev model.Event
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
				return fmt.Errorf("decode event %q: %w", it.Item().Key(), err)
			}
			if !model.Notable(ev.Level) {
				continue
			}
			ref, err := feedRef(&ev)
			if err != nil {
				return err
			}
			if err := wb.Set(feedKey(ev.Seq), ref); err != nil {
				return err
			}
			if err := wb.Set(feedTenantKey(ev.Tenant, ev.Seq), ref); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := wb.Flush(); err != nil {
		return 0, err
	}
	if err := s.syncAll(); err != nil {
		return 0, err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keyFeedIndex, seqBytes(feedIndexVersion))
	}); err != nil {
		return 0, err
	}
	return n, s.syncAll()
}

// normalizeFeed checks q and fills in its defaults.
func normalizeFeed(q *model.FeedQuery) error {
	switch q.Level {
	case "":
		q.Level = model.LevelWarning
	case model.LevelWarning, model.LevelAlert:
	default:
		return fmt.Errorf("%w: feed level must be warning or alert, not %q", model.ErrInvalid, q.Level)
	}
	if q.Limit == 0 {
		q.Limit = model.DefaultFeedLimit
	}
	if q.Limit < 0 || q.Limit > model.MaxFeedLimit {
		return fmt.Errorf("%w: feed limit must be 1 to %d", model.ErrInvalid, model.MaxFeedLimit)
	}
	if q.Prefix == "" {
		q.Prefix = model.Root
	}
	if q.Tenants != nil {
		// Sorted returns nil for an empty list, which would allow every
		// tenant: the copy starts non-nil.
		q.Tenants = append(make([]string, 0, len(q.Tenants)), q.Tenants...)
		slices.Sort(q.Tenants)
		q.Tenants = slices.Compact(q.Tenants)
	}
	return nil
}

// feedWants reports whether a feed reference matches q.
func feedWants(q *model.FeedQuery, ref *model.Event) bool {
	return ref.Path.Within(q.Prefix) && (q.Level != model.LevelAlert || ref.Level == model.LevelAlert)
}

// Feed answers q from the feed index: newest first over the streams q's
// tenants allow, at most model.MaxFeedScan index entries per call.
func (s *Badger) Feed(ctx context.Context, q model.FeedQuery) (model.FeedPage, error) {
	if err := normalizeFeed(&q); err != nil {
		return model.FeedPage{}, fmt.Errorf("store: feed: %w", err)
	}
	var page model.FeedPage
	if q.Tenants != nil && len(q.Tenants) == 0 {
		return page, nil
	}
	before := q.Before
	if before == 0 {
		before = math.MaxUint64
	}
	var prefixes [][]byte
	if q.Tenants == nil {
		prefixes = [][]byte{{pFeed}}
	} else {
		for _, t := range q.Tenants {
			prefixes = append(prefixes, feedTenantPrefix(t))
		}
	}
	err := s.db.View(func(txn *badger.Txn) error {
		its := make([]*badger.Iterator, 0, len(prefixes))
		defer func() {
			for _, it := range its {
				it.Close()
			}
		}()
		for _, p := range prefixes {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p, Reverse: true, PrefetchValues: true, PrefetchSize: 64})
			its = append(its, it)
			// In reverse, Seek finds the largest key <= the seek key.
			it.Seek(append(append([]byte(nil), p...), seqBytes(before-1)...))
		}
		seqOf := func(it *badger.Iterator) uint64 {
			k := it.Item().Key()
			return binary.BigEndian.Uint64(k[len(k)-8:])
		}
		for scanned := 0; ; scanned++ {
			// The stream whose next key is the newest.
			var cur *badger.Iterator
			for _, it := range its {
				if it.Valid() && (cur == nil || seqOf(it) > seqOf(cur)) {
					cur = it
				}
			}
			if cur == nil {
				return nil // every stream read to its end
			}
			seq := seqOf(cur)
			if scanned >= model.MaxFeedScan {
				page.Next = seq + 1 // this entry is not read yet
				return nil
			}
			if scanned%256 == 255 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			var ref model.Event
			if err := cur.Item().Value(func(v []byte) error { return model.Unmarshal(v, &ref) }); err != nil {
				return fmt.Errorf("decode feed entry %d: %w", seq, err)
			}
			cur.Next()
			if !feedWants(&q, &ref) {
				continue
			}
			item, err := txn.Get(eventKey(ref.Path, seq))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue // never left by a deletion; skipped rather than fail the feed
			}
			if err != nil {
				return err
			}
			var ev model.Event
			if err := item.Value(func(v []byte) error { return model.Unmarshal(v, &ev) }); err != nil {
				return fmt.Errorf("decode event %d of %s: %w", seq, ref.Path, err)
			}
			page.Events = append(page.Events, ev)
			if len(page.Events) == q.Limit {
				page.Next = seq
				return nil
			}
		}
	})
	if err != nil {
		return model.FeedPage{}, fmt.Errorf("store: feed: %w", err)
	}
	return page, nil
}
