package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/jackc/pgx/v5"

	"github.com/strata-dm/strata/model"
)

// Copying a Badger store into PostgreSQL (strata store migrate). The copy
// is one PostgreSQL transaction fed from one Badger read transaction: it
// either lands whole, verified, or not at all, leaving the database as
// empty as it found it, so a failed copy is simply run again.
//
// Values are copied byte for byte (contexts, events and log entries stay
// the model's CBOR encoding); contexts and events are decoded only for the
// columns PostgreSQL filters on. The change log keeps its sequence
// numbers, and meta gets Badger's last and first sequence numbers, so the
// node resumes numbering where it stopped and federation cursors stay
// valid. Badger's child index is not copied: PostgreSQL answers Children
// from the contexts' parent column.

// ErrNotEmpty is returned by CopyToPostgres for a database that already
// holds data.
var ErrNotEmpty = errors.New("store: the database is not empty")

// CopyStats counts what CopyToPostgres copied.
type CopyStats struct {
	Contexts, Events, Entries, Records int64
	// LastSeq and FirstSeq are the log's last sequence number and first
	// retained one (0: never compacted).
	LastSeq, FirstSeq uint64
}

// copyTable is one table fed from one Badger key kind.
type copyTable struct {
	prefix  byte
	table   string
	columns []string
	// rows turns a key (without its kind byte) and value into rows.
	rows func(key, value []byte) ([][]any, error)
}

var copyTables = []copyTable{
	{pContext, "contexts", commitContextColumns, oneRow(copyContextRow)},
	{pEvent, "events", []string{"path", "seq", "time", "level", "doc", "tenant"}, oneRow(copyEventRow)},
	{pBlock, "log", []string{"seq", "doc"}, nil}, // copyLogRows, set per copy
	{pRecord, "records", []string{"kind", "key", "value"}, oneRow(copyRecordRow)},
}

func oneRow(f func(key, value []byte) ([]any, error)) func(key, value []byte) ([][]any, error) {
	return func(key, value []byte) ([][]any, error) {
		r, err := f(key, value)
		return [][]any{r}, err
	}
}

// CopyToPostgres copies every key of src into dst, whose tables must be
// empty (else ErrNotEmpty), and checks the row counts before committing.
// src must not be written meanwhile (its node is stopped: the command
// holds the data directory's lock); dst's tables are locked against
// writers for the copy's duration.
func CopyToPostgres(ctx context.Context, src *Badger, dst *Postgres) (CopyStats, error) {
	if dst.readOnly {
		return CopyStats{}, fmt.Errorf("store: copy to postgres: %w", ErrReadOnly)
	}
	// Every context to its own key first: the copy reads keys only.
	if err := src.Checkpoint(); err != nil {
		return CopyStats{}, fmt.Errorf("store: copy to postgres: checkpoint: %w", err)
	}
	var st CopyStats
	err := src.db.View(func(btx *badger.Txn) error {
		var err error
		if st.LastSeq, err = readSeq(btx, keyLast); err != nil {
			return err
		}
		if st.FirstSeq, err = readSeq(btx, keyFirst); err != nil {
			return err
		}
		want, err := countKeys(btx, st.FirstSeq)
		if err != nil {
			return err
		}
		return pgx.BeginFunc(ctx, dst.pool, func(tx pgx.Tx) error {
			// Readers may look; a node starting on the database cannot
			// write until the copy is committed (and then finds the log
			// taken: its commit fails rather than fork it).
			if _, err := tx.Exec(ctx, `LOCK TABLE meta, contexts, events, log, records IN EXCLUSIVE MODE`); err != nil {
				return err
			}
			if err := checkEmpty(ctx, tx); err != nil {
				return err
			}
			got := map[byte]int64{}
			for _, t := range copyTables {
				if t.prefix == pBlock {
					t.rows = copyLogRows(st.FirstSeq)
				}
				start := time.Now()
				n, err := copyKind(ctx, btx, tx, t)
				if err != nil {
					return fmt.Errorf("copy %s: %w", t.table, err)
				}
				got[t.prefix] = n
				dst.log.Info("copied", "table", t.table, "rows", n, "took", time.Since(start).Round(time.Millisecond))
			}
			if _, err := tx.Exec(ctx, `UPDATE meta SET last_seq = $1, first_seq = $2`,
				int64(st.LastSeq), int64(st.FirstSeq)); err != nil {
				return err
			}
			st.Contexts, st.Events, st.Entries, st.Records = got[pContext], got[pEvent], got[pBlock], got[pRecord]
			return verifyCopy(ctx, tx, want, st)
		})
	})
	if err != nil {
		return CopyStats{}, fmt.Errorf("store: copy to postgres: %w", err)
	}
	dst.listen.advance(st.LastSeq)
	return st, nil
}

// countKeys counts src's keys by kind, and for the log its entries from
// first on, refusing kinds this binary does not know (they would be
// lost).
func countKeys(btx *badger.Txn, first uint64) (map[byte]int64, error) {
	n := map[byte]int64{}
	it := btx.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()
		switch {
		case len(k) == 0:
			return nil, errors.New("empty key in the badger store")
		case k[0] == pBlock:
			err := it.Item().Value(func(v []byte) error {
				return eachEntry(v, func(e *model.Entry, _ []byte) error {
					if e.Seq >= first {
						n[pBlock]++
					}
					return nil
				})
			})
			if err != nil {
				return nil, err
			}
			continue
		case k[0] == pContext, k[0] == pChild, k[0] == pEvent, k[0] == pRecord:
		case k[0] == pSearchIndex, k[0] == pSearchCount, bytes.Equal(k, keySearchIndex),
			k[0] == pFeed, k[0] == pFeedTenant, bytes.Equal(k, keyFeedIndex):
			continue // PostgreSQL indexes its rows itself
		case bytes.Equal(k, keyApplied):
			continue // a Raft replica's position: meaningless in PostgreSQL
		case bytes.Equal(k, keyLast), bytes.Equal(k, keyFirst), bytes.Equal(k, keyCheckpoint):
		default:
			return nil, fmt.Errorf("badger store holds a key of unknown kind %q (written by a newer binary?)", k[:1])
		}
		n[k[0]]++
	}
	return n, nil
}

func checkEmpty(ctx context.Context, tx pgx.Tx) error {
	var last, first int64
	var rows bool
	err := tx.QueryRow(ctx, `SELECT last_seq, first_seq,
		EXISTS (SELECT 1 FROM contexts) OR EXISTS (SELECT 1 FROM events)
			OR EXISTS (SELECT 1 FROM log) OR EXISTS (SELECT 1 FROM records)
		FROM meta`).Scan(&last, &first, &rows)
	if err != nil {
		return err
	}
	if rows || last != 0 || first != 0 {
		return fmt.Errorf("%w (last sequence number %d): use a new, empty database", ErrNotEmpty, last)
	}
	return nil
}

// copyKind streams the keys of one kind into one table with COPY.
func copyKind(ctx context.Context, btx *badger.Txn, tx pgx.Tx, t copyTable) (int64, error) {
	it := btx.NewIterator(badger.IteratorOptions{Prefix: []byte{t.prefix}, PrefetchValues: true, PrefetchSize: 256})
	defer it.Close()
	src := &badgerRows{it: it, rows: t.rows}
	n, err := tx.CopyFrom(ctx, pgx.Identifier{t.table}, t.columns, src)
	if err == nil {
		err = src.err
	}
	return n, err
}

// badgerRows is a pgx.CopyFromSource over a Badger iterator.
type badgerRows struct {
	it      *badger.Iterator
	rows    func(key, value []byte) ([][]any, error)
	started bool
	pending [][]any
	values  []any
	err     error
}

func (r *badgerRows) Next() bool {
	for len(r.pending) == 0 {
		if r.err != nil {
			return false
		}
		if r.started {
			r.it.Next()
		} else {
			r.it.Rewind()
			r.started = true
		}
		if !r.it.Valid() {
			return false
		}
		item := r.it.Item()
		v, err := item.ValueCopy(nil)
		if err != nil {
			r.err = err
			return false
		}
		key := item.KeyCopy(nil)
		if r.pending, err = r.rows(key[1:], v); err != nil {
			r.err = fmt.Errorf("key %q: %w", key, err)
			return false
		}
	}
	r.values, r.pending = r.pending[0], r.pending[1:]
	return true
}

func (r *badgerRows) Values() ([]any, error) { return r.values, nil }
func (r *badgerRows) Err() error             { return r.err }

func copyContextRow(key, doc []byte) ([]any, error) {
	var c model.Context
	if err := model.Unmarshal(doc, &c); err != nil {
		return nil, err
	}
	if string(c.Path) != string(key) {
		return nil, fmt.Errorf("holds context %s", c.Path)
	}
	// The same column values as commitBatch writes, the search columns
	// (labels, vars, props) included.
	return contextRow(&c, doc)
}

func copyEventRow(key, doc []byte) ([]any, error) {
	var ev model.Event
	if err := model.Unmarshal(doc, &ev); err != nil {
		return nil, err
	}
	if !bytes.Equal(key, eventKey(ev.Path, ev.Seq)[1:]) {
		return nil, fmt.Errorf("holds event %d of %s", ev.Seq, ev.Path)
	}
	return []any{string(ev.Path), int64(ev.Seq), ev.Time, string(ev.Level), doc, ev.Tenant}, nil
}

// copyLogRows returns the rows of a log block: its entries from first on,
// each with its encoded bytes as they are.
func copyLogRows(first uint64) func(key, blk []byte) ([][]any, error) {
	return func(key, blk []byte) ([][]any, error) {
		if len(key) != 8 {
			return nil, errors.New("not a sequence number")
		}
		var rows [][]any
		var last uint64
		err := eachEntry(blk, func(e *model.Entry, raw []byte) error {
			last = e.Seq
			if e.Seq >= first {
				rows = append(rows, []any{int64(e.Seq), raw})
			}
			return nil
		})
		if err == nil && last != binary.BigEndian.Uint64(key) {
			err = fmt.Errorf("block ends at entry %d", last)
		}
		return rows, err
	}
}

func copyRecordRow(key, value []byte) ([]any, error) {
	kind, k, ok := bytes.Cut(key, []byte{0})
	if !ok {
		return nil, errors.New("record key without a kind")
	}
	if value == nil {
		value = []byte{} // NOT NULL: an empty record is an empty value
	}
	return []any{kind, k, value}, nil
}

// verifyCopy compares the tables with Badger's key counts and the log
// with the sequence numbers in meta.
func verifyCopy(ctx context.Context, tx pgx.Tx, want map[byte]int64, st CopyStats) error {
	for _, t := range copyTables {
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t.table}.Sanitize()).Scan(&n); err != nil {
			return err
		}
		if n != want[t.prefix] {
			return fmt.Errorf("verify: %s has %d rows, the badger store %d keys", t.table, n, want[t.prefix])
		}
	}
	var lo, hi int64
	if err := tx.QueryRow(ctx, `SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM log`).Scan(&lo, &hi); err != nil {
		return err
	}
	if uint64(hi) > st.LastSeq || (st.Entries > 0 && uint64(lo) < st.FirstSeq) {
		return fmt.Errorf("verify: log holds %d..%d, outside the sequence numbers %d..%d", lo, hi, st.FirstSeq, st.LastSeq)
	}
	return nil
}
