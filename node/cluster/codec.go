package cluster

import (
	"errors"
	"fmt"

	"github.com/strata-dm/strata/model"
)

// A Raft log entry of the cluster is one byte of kind, then its body.
// Kinds this binary does not know fail the apply on every replica alike
// (ErrUnknownEntry), so that a replica never skips what another applied.
//
// A batch built on another still in flight (model.Batch.After set) is
// written as entryChained, so that a replica too old to check the chain
// refuses it rather than apply it out of its chain.
const (
	entryBatch   byte = 1 // body: a wireBatch (model encoding)
	entryChained byte = 2 // body: a wireBatch with After set
	entryPrune   byte = 3 // body: a wirePrune (retention.go)
	entryCompact byte = 4 // body: a wireCompact (retention.go)
)

// ErrUnknownEntry is the apply error of a log entry of a kind this binary
// does not know (written by a newer version).
var ErrUnknownEntry = errors.New("cluster: log entry of an unknown kind")

// ErrBadEntry is the apply error of a log entry that does not decode.
var ErrBadEntry = errors.New("cluster: log entry does not decode")

// wireBatch is a model.Batch as the leader proposes it: its entries as the
// model encoded them (so every replica stores the same bytes), and the
// state the store writes.
type wireBatch struct {
	Entries  [][]byte       `cbor:"1,keyasint"`
	Contexts []wireContext  `cbor:"2,keyasint,omitempty"`
	Deleted  []model.Path   `cbor:"3,keyasint,omitempty"`
	Events   []model.Event  `cbor:"4,keyasint,omitempty"`
	Records  []model.Record `cbor:"5,keyasint,omitempty"`
	Dropped  []model.Record `cbor:"6,keyasint,omitempty"`
	ID       uint64         `cbor:"7,keyasint,omitempty"`
	After    uint64         `cbor:"8,keyasint,omitempty"`
}

type wireContext struct {
	Context *model.Context `cbor:"1,keyasint"`
	Index   bool           `cbor:"2,keyasint,omitempty"`
}

// encodeBatch encodes b as the data of one Raft log entry.
func encodeBatch(b *model.Batch) ([]byte, error) {
	w := wireBatch{Entries: make([][]byte, len(b.Entries)), Deleted: b.Deleted,
		Events: b.Events, Records: b.Records, Dropped: b.Dropped, ID: b.ID, After: b.After}
	for i := range b.Entries {
		enc, err := b.EncodedEntry(i)
		if err != nil {
			return nil, fmt.Errorf("cluster: encode entry %d: %w", b.Entries[i].Seq, err)
		}
		w.Entries[i] = enc
	}
	if len(b.Contexts) > 0 {
		w.Contexts = make([]wireContext, len(b.Contexts))
		for i, cw := range b.Contexts {
			w.Contexts[i] = wireContext{Context: cw.Context, Index: cw.Index}
		}
	}
	body, err := model.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode batch: %w", err)
	}
	kind := entryBatch
	if b.After != 0 {
		kind = entryChained
	}
	return append([]byte{kind}, body...), nil
}

// decodeBatch decodes the body of an entryBatch or entryChained log entry
// of that kind and checks what a store relies on: entries in strictly
// increasing sequence order, a context for every context write, After
// set exactly in a chained batch.
func decodeBatch(kind byte, body []byte) (*model.Batch, error) {
	var w wireBatch
	if err := model.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadEntry, err)
	}
	if len(w.Entries) == 0 {
		return nil, fmt.Errorf("%w: a batch without entries", ErrBadEntry)
	}
	if (w.After != 0) != (kind == entryChained) {
		return nil, fmt.Errorf("%w: a batch of kind %d with after=%d", ErrBadEntry, kind, w.After)
	}
	b := &model.Batch{Entries: make([]model.Entry, len(w.Entries)), Encoded: w.Entries,
		Deleted: w.Deleted, Events: w.Events, Records: w.Records, Dropped: w.Dropped, ID: w.ID, After: w.After}
	for i, raw := range w.Entries {
		if err := model.Unmarshal(raw, &b.Entries[i]); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBadEntry, i, err)
		}
		if i > 0 && b.Entries[i].Seq != b.Entries[i-1].Seq+1 {
			return nil, fmt.Errorf("%w: entry %d follows %d", ErrBadEntry, b.Entries[i].Seq, b.Entries[i-1].Seq)
		}
	}
	if b.Entries[0].Seq == 0 {
		return nil, fmt.Errorf("%w: entry with sequence number 0", ErrBadEntry)
	}
	if len(w.Contexts) > 0 {
		b.Contexts = make([]model.ContextWrite, len(w.Contexts))
		for i, wc := range w.Contexts {
			if wc.Context == nil {
				return nil, fmt.Errorf("%w: context write %d without a context", ErrBadEntry, i)
			}
			b.Contexts[i] = model.ContextWrite{Context: wc.Context, Index: wc.Index}
		}
	}
	return b, nil
}
