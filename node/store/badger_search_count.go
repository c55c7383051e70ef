package store

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

// The counts of the search index's postings.
//
// Each term with postings has a count key, the term with pSearchCount in
// place of pSearchIndex, holding how many postings it has (8 bytes, big
// endian); a term without postings has none. countAll holds the number
// of contexts indexed (c keys). reindex adds its changes to the writer's
// deltas, which finish writes into the same write (and write-ahead log
// record) as the postings they count, so no crash leaves them apart; the
// build counts the postings it wrote. A search reads them in its own
// view, as exact as the postings it walks, to lead with the rarest list
// (planSearch).
const pSearchCount = 'y'

// countAll is the count key of every indexed context (no term has kind '*').
var countAll = []byte{pSearchCount, '*'}

// countKey is the count key of the term t (as term returns it).
func countKey(t []byte) []byte {
	k := make([]byte, len(t))
	copy(k, t)
	k[0] = pSearchCount
	return k
}

// addCount records in w that the count at key changes by d.
func (w *txnWriter) addCount(key []byte, d int64) {
	if w.counts == nil {
		w.counts = map[string]int64{}
	}
	w.counts[string(key)] += d
}

// flushCounts writes w's count deltas into w. The commit lock serializes
// every writer, so each read here sees the last count written.
func (w *txnWriter) flushCounts() error {
	keys := make([]string, 0, len(w.counts))
	for k, d := range w.counts {
		if d != 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		n, err := readCount(w.txn, []byte(k))
		if err != nil {
			return err
		}
		next := int64(n) + w.counts[k]
		switch {
		case next < 0:
			return fmt.Errorf("search index: count %q below zero", k)
		case next == 0:
			err = w.del([]byte(k))
		default:
			err = w.set([]byte(k), seqBytes(uint64(next)))
		}
		if err != nil {
			return err
		}
	}
	w.counts = nil
	return nil
}

// readCount reads the count at key (0 when absent).
func readCount(txn *badger.Txn, key []byte) (uint64, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint64
	err = it.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("search index: corrupt count %q", key)
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, err
}

// termLen is the length of the term that starts the posting key k, or 0
// when k does not start with a well-formed term.
func termLen(k []byte) int {
	if len(k) < 3 || k[0] != pSearchIndex {
		return 0
	}
	if k[2] == tagHashed {
		if len(k) < 3+16 {
			return 0
		}
		return 3 + 16
	}
	parts := 1
	switch k[1] {
	case termLabel, termVar:
		parts = 2
	case termType, termTenant:
	default:
		return 0
	}
	i := 3
	for range parts {
		n, w := binary.Uvarint(k[i:])
		if w <= 0 || uint64(len(k)-i-w) < n {
			return 0
		}
		i += w + int(n)
	}
	return i
}

// writeCounts writes the count of every term from the postings on disk
// (one pass over their keys, in term order) and countAll (contexts), for
// the build: the counts are dropped with the postings before.
func (s *Badger) writeCounts(contexts int) error {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	var (
		cur []byte
		n   uint64
	)
	emit := func() error {
		if n == 0 {
			return nil
		}
		return wb.Set(countKey(cur), seqBytes(n))
	}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pSearchIndex}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			l := termLen(k)
			if l == 0 {
				return fmt.Errorf("search index: malformed posting %q", k)
			}
			if n > 0 && string(k[:l]) == string(cur) {
				n++
				continue
			}
			if err := emit(); err != nil {
				return err
			}
			cur, n = append(cur[:0], k[:l]...), 1
		}
		return emit()
	})
	if err != nil {
		return err
	}
	if contexts > 0 {
		if err := wb.Set(countAll, seqBytes(uint64(contexts))); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// searchPlan says how a search walks the posting lists of its filters:
// it steps through the rarest (lead) and checks each candidate against
// the others (check, rarest first) on the signature its posting carries
// (badger_search_sig.go). lead is nil when some list is empty (nothing
// in the postings matches).
type searchPlan struct {
	lead  [][]byte
	check [][][]byte
}

// planSearch orders lists (each a union of terms, as queryTerms gives
// them) by their counts in txn.
func planSearch(txn *badger.Txn, lists [][][]byte) (searchPlan, error) {
	counts := make([]uint64, len(lists))
	order := make([]int, len(lists))
	for i, l := range lists {
		order[i] = i
		for _, t := range l {
			n, err := readCount(txn, countKey(t))
			if err != nil {
				return searchPlan{}, err
			}
			counts[i] += n // a context has one value per term kind and key
		}
		if counts[i] == 0 {
			return searchPlan{}, nil
		}
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(counts[a], counts[b]) })
	plan := searchPlan{lead: lists[order[0]]}
	for _, i := range order[1:] {
		plan.check = append(plan.check, lists[i])
	}
	return plan, nil
}
