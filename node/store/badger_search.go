package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/strata-dm/strata/model"
)

// The search index of the Badger store.
//
// Every context with a c key has one posting key per term it holds:
//
//	x <term> <path>  →  signature of all the context's terms
//
// where a term is a kind byte then a self-delimiting payload:
//
//	t type | n tenant | l label key, value | v variable name, value
//
// each string length-prefixed (uvarint), a variable value in a canonical
// form under which two values are equal exactly when the search's JSON
// equality says so (canonJSON: numbers by decimal value, objects with
// sorted members). A payload longer than maxTermPayload is replaced by a
// SHA-256 prefix of it. The postings of one term are thus a list of paths
// in path order, each term's count is kept beside them
// (badger_search_count.go), and a search walks the rarest list of its
// filters within the subtree's key range and after the cursor, checks
// each path it finds against the other filters on the signature its
// posting carries (badger_search_sig.go), reads only the contexts that
// pass, and stops after a page of matches: its cost is bounded by the
// rarest list, never by the densest, and it reads no other list.
//
// The postings follow the c keys, not the overlay: every write of a c key
// (a commit's new contexts, deletions, checkpoints) rewrites the postings
// of that context in the same write (reindex), which goes through the
// write-ahead log like any other, so no crash leaves them apart. Contexts
// changed since the checkpoint are in the overlay; a search skips the
// postings of those paths and matches their overlay state in Go, merging
// both in path order. Every candidate found through the postings is read
// and matched again (a hashed term could collide), so the index decides
// what is read, never what is answered: results, order and cursor are the
// scan's (ScanSearch), which the conformance test checks.
//
// keySearchIndex holds the index's version. A store without it (written
// before the index, or interrupted while building it) or with another
// version builds the index at open (buildSearchIndex), before serving.
const pSearchIndex = 'x'

// searchIndexVersion changes whenever the postings a context gets, or
// the keys that go with them, change (2: counts, 3: signatures).
const searchIndexVersion = 3

var keySearchIndex = []byte("msearch-index")

// Term kinds.
const (
	termType   = 't'
	termTenant = 'n'
	termLabel  = 'l'
	termVar    = 'v'
)

// maxTermPayload bounds a term's payload in a key; longer ones are hashed.
const maxTermPayload = 256

// Payload tags: the payload as is, or hashed.
const (
	tagPlain  = 0
	tagHashed = 1
)

// term encodes one term: kind, tag, payload.
func term(kind byte, parts ...[]byte) []byte {
	var payload []byte
	for _, p := range parts {
		payload = binary.AppendUvarint(payload, uint64(len(p)))
		payload = append(payload, p...)
	}
	if len(payload) > maxTermPayload {
		sum := sha256.Sum256(payload)
		return append([]byte{pSearchIndex, kind, tagHashed}, sum[:16]...)
	}
	return append([]byte{pSearchIndex, kind, tagPlain}, payload...)
}

func postingKey(t []byte, p model.Path) []byte {
	k := make([]byte, 0, len(t)+len(p))
	return append(append(k, t...), p...)
}

// contextTerms returns the terms c holds, each the prefix of its posting
// keys.
func contextTerms(c *model.Context) [][]byte {
	ts := make([][]byte, 0, 2+len(c.Labels)+len(c.Variables))
	ts = append(ts, term(termType, []byte(c.Type)), term(termTenant, []byte(c.Tenant)))
	for k, v := range c.Labels {
		ts = append(ts, term(termLabel, []byte(k), []byte(v)))
	}
	for name, v := range c.Variables {
		raw := v.Value
		if len(raw) == 0 {
			raw = json.RawMessage("null")
		}
		canon, ok := canonJSON(raw)
		if !ok {
			continue // never equal to a filter (see matcher.match)
		}
		ts = append(ts, term(termVar, []byte(name), canon))
	}
	return ts
}

// canonJSON is the canonical form of the JSON value raw: equal under
// model.EqualDecoded exactly when the forms are equal bytes. ok is false when raw
// is not JSON.
func canonJSON(raw []byte) (canon []byte, ok bool) {
	raw = bytes.Trim(raw, " \t\r\n") // JSON whitespace
	if len(raw) == 0 {
		return nil, false
	}
	switch c := raw[0]; {
	case c == 'n' && string(raw) == "null":
		return []byte{'z'}, true
	case c == 't' && string(raw) == "true":
		return []byte{'t'}, true
	case c == 'f' && string(raw) == "false":
		return []byte{'f'}, true
	case c == '-' || c >= '0' && c <= '9':
		if !json.Valid(raw) {
			return nil, false
		}
		return appendCanonNumber(nil, string(raw)), true
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil, false
		}
		return appendCanonString([]byte{'s'}, s), true
	}
	if !json.Valid(raw) {
		return nil, false // model.DecodeValue would take a valid prefix
	}
	v, err := model.DecodeValue(raw)
	if err != nil {
		return nil, false
	}
	return appendCanon(nil, v), true
}

func appendCanonString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendCanon appends the canonical form of a decoded value (numbers as
// json.Number).
func appendCanon(b []byte, v jsonValue) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, 'z')
	case bool:
		if v {
			return append(b, 't')
		}
		return append(b, 'f')
	case json.Number:
		return appendCanonNumber(b, string(v))
	case string:
		return appendCanonString(append(b, 's'), v)
	case []any:
		b = binary.AppendUvarint(append(b, 'a'), uint64(len(v)))
		for _, e := range v {
			b = appendCanon(b, e)
		}
		return b
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = binary.AppendUvarint(append(b, 'o'), uint64(len(v)))
		for _, k := range keys {
			b = appendCanon(appendCanonString(b, k), v[k])
		}
		return b
	}
	return append(b, '?')
}

// appendCanonNumber appends a JSON number n (valid) as 'n', sign,
// significant digits, 'e', exponent, ';': the value is 0.digits × 10^exp,
// so two numbers of equal decimal value get the same form (4, 4.0 and
// 0.4e1), in time linear in n whatever its exponent. An exponent beyond
// ±2^60 keeps the literal (no number a query may hold equals it).
func appendCanonNumber(b []byte, n string) []byte {
	b = append(b, 'n')
	mant, expStr, hasExp := strings.Cut(strings.ToLower(n), "e")
	neg := strings.HasPrefix(mant, "-")
	mant = strings.TrimPrefix(mant, "-")
	intPart, frac, _ := strings.Cut(mant, ".")
	var exp int64
	if hasExp {
		x, err := strconv.ParseInt(strings.TrimPrefix(expStr, "+"), 10, 64)
		if err != nil || x > 1<<60 || x < -(1<<60) {
			return append(append(b, '~'), n...)
		}
		exp = x
	}
	digits := intPart + frac
	exp += int64(len(intPart))
	trimmed := strings.TrimLeft(digits, "0")
	exp -= int64(len(digits) - len(trimmed))
	trimmed = strings.TrimRight(trimmed, "0")
	if trimmed == "" {
		return append(b, '0', ';')
	}
	if neg {
		b = append(b, '-')
	}
	b = append(b, trimmed...)
	b = append(b, 'e')
	b = strconv.AppendInt(b, exp, 10)
	return append(b, ';')
}

// reindex rewrites, in w, the postings of the context at p from those of
// its c key (as w sees it) to those of next (nil: none). The caller then
// writes or deletes the c key in the same w.
func reindex(w *txnWriter, p model.Path, next *model.Context) error {
	var oldTerms [][]byte
	it, err := w.txn.Get(contextKey(p))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		if next != nil {
			w.addCount(countAll, 1)
		}
	case err != nil:
		return err
	default:
		if next == nil {
			w.addCount(countAll, -1)
		}
		var old model.Context
		if err := it.Value(func(v []byte) error { return model.Unmarshal(v, &old) }); err != nil {
			return fmt.Errorf("context %s: %w", p, err)
		}
		oldTerms = contextTerms(&old)
	}
	var newTerms [][]byte
	if next != nil {
		newTerms = contextTerms(next)
	}
	has := func(ts [][]byte, t []byte) bool {
		return slices.ContainsFunc(ts, func(x []byte) bool { return bytes.Equal(x, t) })
	}
	changed := false
	for _, t := range oldTerms {
		if !has(newTerms, t) {
			if err := w.del(postingKey(t, p)); err != nil {
				return err
			}
			w.addCount(countKey(t), -1)
			changed = true
		}
	}
	for _, t := range newTerms {
		if !has(oldTerms, t) {
			w.addCount(countKey(t), 1)
			changed = true
		}
	}
	if !changed {
		return nil // the same terms: the same postings and signature
	}
	// Every posting carries the signature of all the terms: rewrite them.
	sig := termSignature(newTerms)
	for _, t := range newTerms {
		if err := w.set(postingKey(t, p), sig); err != nil {
			return err
		}
	}
	return nil
}

// openSearchIndex builds the search index at open when keySearchIndex
// says it is missing or of another version. It runs before the store
// serves anything.
func (s *Badger) openSearchIndex() error {
	return s.openIndex("search", "contexts", keySearchIndex, searchIndexVersion, s.buildSearchIndex)
}

// openIndex runs build when the version stored at key is not version
// (missing: never built, or a build interrupted), logging what it built.
func (s *Badger) openIndex(name, items string, key []byte, version uint64, build func() (int, error)) error {
	var stored uint64
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		stored, err = readSeq(txn, key)
		return err
	})
	if err != nil || stored == version {
		return err
	}
	start := time.Now()
	s.log.Info("building the "+name+" index", "version", version)
	n, err := build()
	if err != nil {
		return err
	}
	s.log.Info(name+" index built", items, n, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// buildSearchIndex drops every posting and count, writes the postings of
// every c key, then their counts, then keySearchIndex. Each step is synced before the next relies on it,
// so an interrupted build leaves no keySearchIndex and starts over.
func (s *Badger) buildSearchIndex() (int, error) {
	err := s.db.Update(func(txn *badger.Txn) error { return txn.Delete(keySearchIndex) })
	if err != nil {
		return 0, err
	}
	if err := s.syncAll(); err != nil {
		return 0, err
	}
	if err := s.dropPrefix([]byte{pSearchIndex}); err != nil {
		return 0, err
	}
	if err := s.dropPrefix([]byte{pSearchCount}); err != nil {
		return 0, err
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	n := 0
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{pContext}, PrefetchValues: true, PrefetchSize: 256})
		defer it.Close()
		var c model.Context
		for it.Rewind(); it.Valid(); it.Next() {
			c = model.Context{}
			if err := it.Item().Value(func(v []byte) error { return model.Unmarshal(v, &c) }); err != nil {
				return fmt.Errorf("decode context %s: %w", it.Item().Key()[1:], err)
			}
			p := model.Path(it.Item().Key()[1:])
			terms := contextTerms(&c)
			sig := termSignature(terms)
			for _, t := range terms {
				if err := wb.Set(postingKey(t, p), sig); err != nil {
					return err
				}
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
	if err := s.writeCounts(n); err != nil {
		return 0, err
	}
	if err := s.syncAll(); err != nil {
		return 0, err
	}
	if err := s.db.Update(func(txn *badger.Txn) error {
		return txn.Set(keySearchIndex, seqBytes(searchIndexVersion))
	}); err != nil {
		return 0, err
	}
	return n, s.syncAll()
}

// Search answers q from the search index (see above), or scans the
// subtree when q has no filter the index holds. It stops early when ctx
// ends.
func (s *Badger) Search(ctx context.Context, q SearchQuery) (SearchPage, error) {
	if err := normalizeSearch(&q); err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	m, err := newMatcher(&q)
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	lists, ok := queryTerms(&q)
	if !ok {
		return SearchPage{}, nil // an empty list of tenants
	}
	if len(lists) == 0 {
		return s.scanSearch(ctx, &q, m)
	}
	page, err := s.indexSearch(ctx, &q, m, lists)
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search %s: %w", q.Prefix, err)
	}
	return page, nil
}

// queryTerms returns the posting lists q needs, each a union of terms
// (tenants) and all of them intersected. ok is false when q can match
// nothing (Tenants empty but not nil).
func queryTerms(q *SearchQuery) (lists [][][]byte, ok bool) {
	if q.Tenants != nil {
		if len(q.Tenants) == 0 {
			return nil, false
		}
		var u [][]byte
		for _, n := range q.Tenants {
			u = append(u, term(termTenant, []byte(n)))
		}
		lists = append(lists, u)
	}
	if q.Type != "" {
		lists = append(lists, [][]byte{term(termType, []byte(q.Type))})
	}
	for k, v := range q.Labels {
		lists = append(lists, [][]byte{term(termLabel, []byte(k), []byte(v))})
	}
	for name, raw := range q.Vars {
		canon, ok := canonJSON(raw)
		if !ok {
			return nil, false // normalizeSearch refuses it first
		}
		lists = append(lists, [][]byte{term(termVar, []byte(name), canon)})
	}
	return lists, true
}

// postings walks the posting list of one term, or the union of several
// (tenants: a context holds one of them), in path order, each posting
// with its signature.
type postings struct {
	prefixes [][]byte
	its      []*badger.Iterator
}

func newPostings(txn *badger.Txn, terms [][]byte) *postings {
	p := &postings{prefixes: terms}
	for _, t := range terms {
		p.its = append(p.its, txn.NewIterator(badger.IteratorOptions{Prefix: t}))
	}
	return p
}

func (p *postings) close() {
	for _, it := range p.its {
		it.Close()
	}
}

// walk calls fn with each posting at or after start and before end, in
// path order, until fn returns false or an error. sig is valid until fn
// returns.
func (p *postings) walk(start, end string, fn func(path string, sig []byte) (bool, error)) error {
	for i, it := range p.its {
		it.Seek(postingKey(p.prefixes[i], model.Path(start)))
	}
	var sig []byte
	for {
		best := -1
		var least []byte
		for i, it := range p.its {
			if !it.Valid() {
				continue
			}
			if k := it.Item().Key()[len(p.prefixes[i]):]; best < 0 || bytes.Compare(k, least) < 0 {
				best, least = i, k
			}
		}
		if best < 0 || string(least) >= end {
			return nil
		}
		path := string(least)
		var err error
		if sig, err = p.its[best].Item().ValueCopy(sig[:0]); err != nil {
			return err
		}
		if more, err := fn(path, sig); err != nil || !more {
			return err
		}
		p.its[best].Next()
	}
}

// indexSearch answers q from the posting lists (q normalized, with at
// least one list), merged with the overlay's contexts.
func (s *Badger) indexSearch(ctx context.Context, q *SearchQuery, m *matcher, terms [][][]byte) (SearchPage, error) {
	b := &pageBuilder{limit: q.Limit}
	from, to, start := startAfter(q)
	txn, over := s.view(from, start)
	defer txn.Discard()
	if err := s.addPrefixContext(q, m, b); err != nil {
		return SearchPage{}, err
	}
	// The overlay decides for the paths it holds: their postings (of the
	// c key) are skipped, their current state matched here.
	var (
		inOverlay map[model.Path]bool
		matched   []*model.Context // in path order, as over
	)
	if len(over) > 0 {
		inOverlay = make(map[model.Path]bool, len(over))
		for _, it := range over {
			inOverlay[it.path] = true
			if it.c != nil && m.match(it.c) {
				matched = append(matched, it.c)
			}
		}
	}
	plan, err := planSearch(txn, terms)
	if err != nil {
		return SearchPage{}, err
	}
	full := false
	n := 0
	walk := func(path string, sig []byte) (bool, error) {
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return false, ctx.Err()
		}
		p := model.Path(path)
		if inOverlay[p] {
			return true, nil
		}
		for _, l := range plan.check {
			if !sigHoldsAny(sig, l) {
				return true, nil
			}
		}
		c, err := readIndexed(txn, p)
		if err != nil || c == nil || !m.match(c) {
			return err == nil, err // gone, or a false positive
		}
		for len(matched) > 0 && matched[0].Path < p {
			if full = b.add(matched[0]); full {
				return false, nil
			}
			matched = matched[1:]
		}
		full = b.add(c)
		return !full, nil
	}
	if plan.lead != nil {
		lead := newPostings(txn, plan.lead)
		defer lead.close()
		err = lead.walk(start, to, walk)
	}
	if err != nil {
		return SearchPage{}, err
	}
	for _, c := range matched {
		if full || b.add(c) {
			break
		}
	}
	return b.page, nil
}

// LoadContexts writes contexts that do not exist yet to their own keys
// and the child index, as Commit and a checkpoint leave them, but without
// change-log entries, ancestors or postings, and drops the search index's
// version marker so that the next open builds the index: it is for
// loading benchmarks into a store no model is running on (the state of a
// store written before the index), never for a live node. It returns
// how many contexts it wrote.
func (s *Badger) LoadContexts(cs []*model.Context) (int, error) {
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, c := range cs {
		v, err := model.Marshal(c)
		if err != nil {
			return 0, fmt.Errorf("store: encode context %s: %w", c.Path, err)
		}
		iv, err := model.Marshal(model.Child{Name: c.Path.Name(), Type: c.Type, Tenant: c.Tenant})
		if err != nil {
			return 0, err
		}
		if err := wb.Set(contextKey(c.Path), v); err != nil {
			return 0, err
		}
		if err := wb.Set(childKey(c.Path), iv); err != nil {
			return 0, err
		}
	}
	if err := wb.Delete(keySearchIndex); err != nil {
		return 0, err
	}
	if err := wb.Flush(); err != nil {
		return 0, fmt.Errorf("store: load contexts: %w", err)
	}
	return len(cs), nil
}
