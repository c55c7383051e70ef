package model

import "time"

// Store is the durable state the model needs. It is deliberately small:
// writes arrive only as whole batches from the state machine, reads are
// point lookups, one level of children, event history and the log. The
// Badger and PostgreSQL stores in node/store implement it.
type Store interface {
	// Commit writes one batch atomically and returns only once it is
	// durable (it survives kill -9 or power loss of the host).
	Commit(b *Batch) error
	// LastSeq is the sequence number of the last committed entry, 0 if none.
	LastSeq() (uint64, error)
	// Context returns the context at p or ErrNotFound.
	Context(p Path) (*Context, error)
	// Children lists p's direct children in name order, starting after the
	// name after ("" for the first), at most limit of them.
	Children(p Path, after string, limit int) ([]Child, error)
	// Events returns p's event history matching q, newest first.
	Events(p Path, q EventQuery) ([]Event, error)
	// ReadLog returns up to limit entries with Seq > after in order, or
	// ErrCompacted when some of them were already dropped.
	ReadLog(after uint64, limit int) ([]Entry, error)
	// Record returns one node-local record's value or ErrNotFound.
	Record(kind, key string) ([]byte, error)
	// Records calls fn for each record of a kind in key order.
	Records(kind string, fn func(key string, value []byte) error) error
	// Snapshot calls fn for the context at prefix and every context below
	// it, in path order, all read from one consistent view, and returns the
	// sequence number that view reflects.
	Snapshot(prefix Path, fn func(*Context) error) (uint64, error)
	Close() error
}

// Batch is the effect of applying a run of mutations: everything a store
// must write, atomically, for them to be durable. A store applies Deleted
// first (the context, its child-index entry and all its stored events go),
// then Contexts, Events, Records and Dropped, then the log. Each path
// appears at most once in Contexts; a path may be both in Deleted and in
// Contexts (deleted, then created again). Records and Dropped are
// disjoint, and no event belongs to a context deleted after it.
type Batch struct {
	Entries []Entry // change-log entries, in sequence order
	// Encoded, when not nil, holds Marshal(&Entries[i]) at i: the model
	// encodes entries while the previous batch commits, so that a store
	// need not on its own commit path.
	Encoded  [][]byte
	Contexts []ContextWrite // the new full state of each changed context
	Deleted  []Path         // contexts removed (with their events and index entry)
	Events   []Event        // events recorded
	Records  []Record       // node-local records put
	Dropped  []Record       // node-local records deleted (Value unused)

	// ID names the batch (random, not 0) for a Pipelined store. After,
	// when not 0, is the ID of the batch still in flight that this one
	// was built on: it is valid only directly after that batch.
	ID, After uint64
}

// ContextWrite is one context to store. Index is set when the context is new
// or its type or tenant changed, so its entry in the parent's child index
// must be (re)written.
type ContextWrite struct {
	Context *Context
	Index   bool
}

// EncodedEntry returns the encoding of Entries[i].
func (b *Batch) EncodedEntry(i int) ([]byte, error) {
	if i < len(b.Encoded) && b.Encoded[i] != nil {
		return b.Encoded[i], nil
	}
	return Marshal(&b.Entries[i])
}

// LastSeq is the sequence number of the batch's last entry.
func (b *Batch) LastSeq() uint64 {
	if len(b.Entries) == 0 {
		return 0
	}
	return b.Entries[len(b.Entries)-1].Seq
}

// EventQuery selects event history. Zero fields do not filter.
type EventQuery struct {
	Before uint64    // only events with Seq < Before
	Since  time.Time // only events at or after Since
	Level  Level     // only events of this level
	Limit  int       // at most Limit events (the store caps it)
}

// Pipelined is a Store that takes a batch before the ones given before
// it are durable: a replicated log proposes the next batch while the
// previous ones replicate, so that one commit's round trip is not paid
// per batch. The model keeps up to MaxInFlight batches in flight, each
// built on the state the previous ones leave.
//
// Propose returns once b is queued behind every batch proposed before
// it; wait then returns b's outcome as Commit would (Commit is Propose
// and wait). A batch whose After is set must fail without applying
// anything unless the batch of that ID was the last one applied before
// it: a batch built on one that failed never applies.
type Pipelined interface {
	Store
	Propose(b *Batch) (wait func() error, err error)
	// MaxInFlight bounds the batches proposed and not yet durable.
	MaxInFlight() int
}

// Replicated is a Store whose batches are applied by a replicated log (a
// Raft cluster: node/cluster). It applies every batch the log commits,
// in log order: those this model gave to Commit and those another
// replica proposed. It tells the model of each (Replica.Applied) before
// the Commit of that batch returns, so the model publishes nothing on
// Commit itself: what readers see (cache, log tail, Changed, OnCommit
// hooks) follows the log on every replica.
//
// A Commit whose batch was not built on the state the log has reached
// when it applies it (another replica wrote meanwhile) must fail without
// applying anything.
type Replicated interface {
	Store
	// Attach is called once, by New, before any Commit.
	Attach(Replica)
}

// Replica is the model's side of a Replicated store. Its methods are
// called one at a time, in log order.
type Replica interface {
	// Applied publishes a batch the store has applied. own is true when
	// it is the batch of a Commit of this model still waiting for its
	// outcome; false for batches proposed elsewhere (or whose Commit
	// already failed).
	Applied(b *Batch, own bool)
	// Reset drops what the model holds of the store's state, after the
	// store was replaced by a snapshot whose log ends at last.
	Reset(last uint64)
}
