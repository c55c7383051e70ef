package model

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

// FolderType is the type given to ancestors created implicitly by a put.
const FolderType = "folder"

// machine applies proposals to the current state and accumulates the batch
// that makes them durable. A proposal either applies completely or leaves
// no trace: its changes are staged and merged only when all succeed.
//
// The machine reads committed state from the store and its own staged
// changes from an overlay, so later mutations of a batch see earlier ones.
type machine struct {
	base  func(Path) (*Context, error) // committed state: cache, then store
	store Store
	prev  []map[Path]*staged // the batches being committed, newest first
	seq   uint64
	at    time.Time

	// Committed-to-batch overlay: path -> state (nil = deleted).
	ctx   map[Path]*staged
	order []Path // first-touch order of ctx keys, for a deterministic batch
	// purge: paths deleted in the batch, with the sequence number of
	// their last deletion.
	purge map[Path]uint64
	// recs: the last operation of the batch on each record key.
	recs     map[[2]string]recOp
	recOrder [][2]string
	b        Batch
	// prevRecs: the records of the batches in flight, newest first.
	prevRecs []map[[2]string]recOp
	updaters map[string]RecordUpdater
	recCache *recCache
}

type recOp struct {
	r   Record
	del bool
}

type staged struct {
	c     *Context // nil when deleted
	index bool     // the child-index entry must be (re)written
}

// newMachine starts a batch; size is the number of entries it is expected
// to hold (the previous batch's), to allocate its slices once.
func newMachine(base func(Path) (*Context, error), s Store, prev []map[Path]*staged, last uint64, at time.Time, size int) *machine {
	m := &machine{base: base, store: s, prev: prev, seq: last, at: at, ctx: make(map[Path]*staged, size),
		purge: make(map[Path]uint64), recs: make(map[[2]string]recOp), order: make([]Path, 0, size)}
	m.b.Entries = make([]Entry, 0, size)
	m.b.Encoded = make([][]byte, 0, size)
	return m
}

// tx is one proposal's staging area over the machine. Most proposals
// touch one context or a few: staged contexts are kept in order (order,
// sts) and looked up by scanning them, with a map (ctx) only past
// txIndexFrom of them.
type tx struct {
	m       *machine
	ctx     map[Path]*staged
	order   []Path
	sts     []*staged
	entries []Entry
	events  []Event
	recs    []recOp
	purge   map[Path]uint64
	seq     uint64
}

func (m *machine) propose(muts []Mutation) ([]Entry, error) {
	// The proposal's entries go straight into the batch's spare capacity;
	// they become part of it only if the proposal succeeds.
	start := len(m.b.Entries)
	if need := len(muts) + 8; cap(m.b.Entries)-start < need { // room for a few ancestors too
		m.b.Entries = slices.Grow(m.b.Entries, need)
	}
	t := &tx{m: m, seq: m.seq, entries: m.b.Entries[start:]}
	for i := range muts {
		if err := t.apply(&muts[i]); err != nil {
			return nil, err
		}
	}
	// The entries are encoded here, on the applier, while the previous
	// batch commits, rather than on the commit path.
	encoded := m.b.Encoded
	for i := range t.entries {
		enc, err := Marshal(&t.entries[i])
		if err != nil {
			return nil, fmt.Errorf("%w: encode entry: %v", ErrInvalid, err)
		}
		encoded = append(encoded, enc)
	}
	// Success: merge into the batch.
	m.seq = t.seq
	for i, p := range t.order {
		s := t.sts[i]
		if prev, ok := m.ctx[p]; ok {
			s.index = s.index || prev.index
		} else {
			m.order = append(m.order, p)
		}
		m.ctx[p] = s
	}
	m.b.Encoded = encoded
	if n := len(t.entries); n > 0 && cap(m.b.Entries) > start && &m.b.Entries[:start+1][start] == &t.entries[0] {
		m.b.Entries = m.b.Entries[:start+n] // written in place
	} else {
		m.b.Entries = append(m.b.Entries, t.entries...)
	}
	m.b.Events = append(m.b.Events, t.events...)
	for p, seq := range t.purge {
		m.purge[p] = seq
	}
	for _, op := range t.recs {
		k := [2]string{op.r.Kind, op.r.Key}
		if _, ok := m.recs[k]; !ok {
			m.recOrder = append(m.recOrder, k)
		}
		m.recs[k] = op
	}
	return t.entries[:len(t.entries):len(t.entries)], nil
}

func (m *machine) batch() *Batch {
	for _, p := range m.order {
		if _, ok := m.purge[p]; ok {
			m.b.Deleted = append(m.b.Deleted, p)
		}
		if s := m.ctx[p]; s.c != nil {
			m.b.Contexts = append(m.b.Contexts, ContextWrite{Context: s.c, Index: s.index || m.purge[p] > 0})
		}
	}
	if len(m.purge) > 0 {
		// Events recorded before their context's deletion go with it.
		kept := m.b.Events[:0]
		for _, ev := range m.b.Events {
			if ev.Seq > m.purge[ev.Path] {
				kept = append(kept, ev)
			}
		}
		m.b.Events = kept
	}
	for _, k := range m.recOrder {
		if op := m.recs[k]; op.del {
			m.b.Dropped = append(m.b.Dropped, op.r)
		} else {
			m.b.Records = append(m.b.Records, op.r)
		}
	}
	return &m.b
}

// get returns the current state of p as seen by this proposal: its own
// staging, then the batch, then the store. The result must not be mutated.
func (t *tx) get(p Path) (*Context, error) {
	if s, ok := t.staged(p); ok {
		return s.c, nil
	}
	if s, ok := t.m.ctx[p]; ok {
		return s.c, nil
	}
	for _, l := range t.m.prev {
		if s, ok := l[p]; ok {
			return s.c, nil
		}
	}
	c, err := t.m.base(p)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return c, err
}

// txIndexFrom is the number of staged contexts from which a tx indexes
// them in a map.
const txIndexFrom = 8

// staged returns what the proposal staged for p.
func (t *tx) staged(p Path) (*staged, bool) {
	if t.ctx != nil {
		s, ok := t.ctx[p]
		return s, ok
	}
	for i, q := range t.order {
		if q == p {
			return t.sts[i], true
		}
	}
	return nil, false
}

func (t *tx) stage(p Path, c *Context, index bool) {
	if prev, ok := t.staged(p); ok {
		prev.c = c
		prev.index = prev.index || index
		return
	}
	s := &staged{c: c, index: index}
	t.order = append(t.order, p)
	t.sts = append(t.sts, s)
	switch {
	case t.ctx != nil:
		t.ctx[p] = s
	case len(t.order) > txIndexFrom:
		t.ctx = make(map[Path]*staged, 2*len(t.order))
		for i, q := range t.order {
			t.ctx[q] = t.sts[i]
		}
	}
}

func (t *tx) next(m Mutation) Entry {
	t.seq++
	e := Entry{Seq: t.seq, Time: t.m.at, Mutation: m}
	t.entries = append(t.entries, e)
	return e
}

func (t *tx) apply(m *Mutation) error {
	switch m.Op {
	case OpPut:
		return t.put(m)
	case OpDelete:
		return t.delete(m)
	case OpEvent:
		return t.event(m)
	case OpPutRecord:
		t.next(*m)
		t.recs = append(t.recs, recOp{r: *m.Record})
		return nil
	case OpDeleteRecord:
		t.next(*m)
		t.recs = append(t.recs, recOp{r: *m.Record, del: true})
		return nil
	case OpUpdateRecord:
		return t.updateRecord(m)
	}
	return fmt.Errorf("%w: unknown op %d", ErrInvalid, m.Op)
}

// updateRecord applies an OpUpdateRecord: the kind's updater decides the
// record's new value from its current one, and the entry logged is the
// put of that value.
func (t *tx) updateRecord(m *Mutation) error {
	r := m.Record
	fn := t.m.updaters[r.Kind]
	if fn == nil {
		return fmt.Errorf("%w: records of kind %q cannot be updated here", ErrInvalid, r.Kind)
	}
	cur, err := t.record(r.Kind, r.Key)
	if err != nil {
		return err
	}
	v, err := fn(r.Key, cur, r.Value)
	if err != nil {
		return err
	}
	if v == nil {
		v = []byte{}
	}
	put := Record{Kind: r.Kind, Key: r.Key, Value: v}
	t.next(Mutation{Op: OpPutRecord, Record: &put})
	t.recs = append(t.recs, recOp{r: put})
	return nil
}

// record returns the current value of a record as seen by this proposal
// (nil when there is none): its own staging, then the batch, then the
// batch being committed, then the records cache (published batches),
// then the store.
func (t *tx) record(kind, key string) ([]byte, error) {
	for i := len(t.recs) - 1; i >= 0; i-- {
		if op := t.recs[i]; op.r.Kind == kind && op.r.Key == key {
			return op.value(), nil
		}
	}
	k := [2]string{kind, key}
	if op, ok := t.m.recs[k]; ok {
		return op.value(), nil
	}
	for _, recs := range t.m.prevRecs {
		if op, ok := recs[k]; ok {
			return op.value(), nil
		}
	}
	if t.m.recCache != nil {
		if v, ok := t.m.recCache.get(k); ok {
			return v, nil
		}
	}
	v, err := t.m.store.Record(kind, key)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return v, err
}

func (op recOp) value() []byte {
	if op.del {
		return nil
	}
	return op.r.Value
}

// guard enforces m.Actor (see Mutation.Actor) against the current state:
// cur is the target (nil when missing).
func (t *tx) guard(m *Mutation, cur *Context) error {
	if m.Actor == "" {
		return nil
	}
	if cur != nil {
		switch cur.Tenant {
		case m.Actor:
		case "":
			return fmt.Errorf("%w: %s", ErrShared, m.Path)
		default:
			return fmt.Errorf("%w: %s", ErrNotFound, m.Path)
		}
	}
	p := m.Path
	for i := 1; i < len(p); i++ { // the ancestors, as Ancestors lists them, without the list
		if p[i] != '/' {
			continue
		}
		a := p[:i]
		c, err := t.get(a)
		if err != nil {
			return err
		}
		if c != nil && c.Tenant != "" && c.Tenant != m.Actor {
			return fmt.Errorf("%w: %s", ErrNotFound, a)
		}
	}
	return nil
}

func (t *tx) put(m *Mutation) error {
	cur, err := t.get(m.Path)
	if err != nil {
		return err
	}
	if err := t.guard(m, cur); err != nil {
		return err
	}
	if cur == nil && m.Actor != "" {
		mm := *m
		mm.Tenant = m.Actor
		m = &mm
	}
	if cur == nil {
		if err := t.ensureAncestors(m.Path); err != nil {
			return err
		}
	}
	e := t.next(*m)
	c, index := putState(cur, m, &e)
	if len(c.Labels) > MaxLabels {
		return fmt.Errorf("%w: more than %d labels on %s", ErrInvalid, MaxLabels, m.Path)
	}
	if len(c.Variables) > MaxVariables {
		return fmt.Errorf("%w: more than %d variables on %s", ErrInvalid, MaxVariables, m.Path)
	}
	// The entry carries the resolved tenant so followers can filter by
	// tenant without looking the context up; replaying it is unchanged.
	t.entries[len(t.entries)-1].Mutation.Tenant = c.Tenant
	t.stage(m.Path, c, index)
	return nil
}

// putState returns cur (nil: missing) with the put m of entry e applied,
// and whether the context's child-index entry must be (re)written. cur is
// not changed. It is the whole effect of a put on its context: the state
// machine uses it, and so does ReplayEntry, which rebuilds contexts from
// the log.
func putState(cur *Context, m *Mutation, e *Entry) (*Context, bool) {
	var c *Context
	index := false
	if cur == nil {
		typ := m.Type
		if typ == "" {
			typ = FolderType
		}
		c = &Context{Path: m.Path, Type: typ, Tenant: m.Tenant, Created: e.Time}
		index = true
	} else {
		// Contexts are immutable once stored: copy only the maps this
		// put changes, and share the rest with the previous version.
		n := *cur
		c = &n
		if len(m.Labels) > 0 && !m.Replace {
			c.Labels = maps.Clone(cur.Labels)
		}
		if len(m.Variables) > 0 && !m.Replace {
			c.Variables = maps.Clone(cur.Variables)
		}
		if m.Type != "" && m.Type != c.Type {
			c.Type, index = m.Type, true
		}
		if (m.Tenant != "" || m.Replace) && m.Tenant != c.Tenant {
			c.Tenant, index = m.Tenant, true
		}
	}
	if m.Replace {
		c.Labels, c.Variables, c.Functions = nil, nil, nil
	}
	for k, v := range m.Labels {
		if v == "" {
			delete(c.Labels, k)
			continue
		}
		if c.Labels == nil {
			c.Labels = make(map[string]string, len(m.Labels))
		}
		c.Labels[k] = v
	}
	for name, v := range m.Variables {
		if v.Time.IsZero() {
			v.Time = e.Time
		}
		if c.Variables == nil {
			c.Variables = make(map[string]Variable, len(m.Variables))
		}
		c.Variables[name] = v
	}
	if m.SetFunctions || m.Replace { // a replace sets the functions, even to none
		fs := append([]Function(nil), m.Functions...)
		sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
		c.Functions = fs
	}
	c.Updated = e.Time
	c.Version = e.Seq
	return c, index
}

// ReplayEntry returns the state of e's context after e, given its state
// cur before (nil: missing), and whether e changes the context at all
// (events and records do not; a deletion returns nil). e is an entry as
// the log holds it. Replaying the entries after a point in order, from
// the contexts as they were at that point, rebuilds them exactly; so does
// replaying them from a later state of the same history, because every
// put sets the fields it names, whatever they were.
func ReplayEntry(cur *Context, e *Entry) (*Context, bool) {
	switch e.Mutation.Op {
	case OpPut:
		c, _ := putState(cur, &e.Mutation, e)
		return c, true
	case OpDelete:
		return nil, true
	}
	return cur, false
}

// ensureAncestors creates missing ancestors of p as folders of no tenant,
// each with its own log entry, so that the log alone rebuilds the tree.
func (t *tx) ensureAncestors(p Path) error {
	for _, a := range p.Ancestors() {
		c, err := t.get(a)
		if err != nil {
			return err
		}
		if c != nil {
			continue
		}
		e := t.next(Mutation{Op: OpPut, Path: a, Type: FolderType})
		t.stage(a, &Context{Path: a, Type: FolderType, Created: e.Time, Updated: e.Time, Version: e.Seq}, true)
	}
	return nil
}

func (t *tx) delete(m *Mutation) error {
	cur, err := t.get(m.Path)
	if err != nil {
		return err
	}
	if cur == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, m.Path)
	}
	if err := t.guard(m, cur); err != nil {
		return err
	}
	if has, err := t.hasChildren(m.Path); err != nil {
		return err
	} else if has {
		return fmt.Errorf("%w: %s has children", ErrConflict, m.Path)
	}
	mm := *m
	mm.Tenant = cur.Tenant
	e := t.next(mm)
	if t.purge == nil {
		t.purge = make(map[Path]uint64)
	}
	t.purge[m.Path] = e.Seq
	t.stage(m.Path, nil, true)
	return nil
}

// hasChildren reports whether p has a child that exists after the staged
// changes: one in the store not deleted since, or one created since.
func (t *tx) hasChildren(p Path) (bool, error) {
	layers := append([]map[Path]*staged{t.m.ctx}, t.m.prev...)
	inStage := func(c Path) (exists, known bool) {
		if s, ok := t.staged(c); ok {
			return s.c != nil, true
		}
		for _, l := range layers {
			if s, ok := l[c]; ok {
				return s.c != nil, true
			}
		}
		return false, false
	}
	paths := append([]Path(nil), t.order...)
	for _, set := range layers {
		for c := range set {
			paths = append(paths, c)
		}
	}
	for _, c := range paths {
		if c.Parent() == p && !c.IsRoot() {
			if exists, _ := inStage(c); exists {
				return true, nil
			}
		}
	}
	after := ""
	for {
		kids, err := t.m.store.Children(p, after, 64)
		if err != nil {
			return false, err
		}
		for _, k := range kids {
			c, _ := p.Child(k.Name)
			if exists, known := inStage(c); !known || exists {
				return true, nil
			}
		}
		if len(kids) < 64 {
			return false, nil
		}
		after = kids[len(kids)-1].Name
	}
}

func (t *tx) event(m *Mutation) error {
	cur, err := t.get(m.Path)
	if err != nil {
		return err
	}
	if cur == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, m.Path)
	}
	if err := t.guard(m, cur); err != nil {
		return err
	}
	ev := *m.Event
	ev.Path = m.Path
	ev.Tenant = cur.Tenant
	if ev.Time.IsZero() {
		ev.Time = t.m.at
	}
	mm := *m
	mm.Event = &ev
	mm.Tenant = cur.Tenant
	e := t.next(mm)
	ev.Seq = e.Seq
	t.events = append(t.events, ev)
	return nil
}
