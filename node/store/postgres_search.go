package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-dm/strata/model"
)

// Inventory search on PostgreSQL (see search.go). contexts.props holds
// each context's tenant, labels and variable values as one JSON document,
// {"n": tenant, "l": {labels}, "v": {name: value}}, written with the
// context at commit (searchColumns), with one jsonb_path_ops GIN index
// (migration 0003). A query is one statement:
//
//	WHERE <path range of the subtree> AND path > after AND type = ...
//	  AND props @> {"n": tenant, "l": {...}, "v": {...}}  (every filter at once)
//	  AND props -> 'v' -> name = value ...  (objects and arrays only)
//	  AND tenant = ANY(...)                 (two tenants or more)
//	ORDER BY path LIMIT limit+1
//
// All label and variable filters, and a single tenant, are one
// containment, so the GIN scan intersects the posting lists of all of
// them, led by the rarest (GIN's fast scan skips through the common
// values' lists), and the bitmap holds only the rows matching every
// filter. jsonb_path_ops is lossy, so each of
// those rows is rechecked on the heap; the primary key gives path order
// and the subtree range. The planner picks, from column statistics,
// between walking the primary key in path order (filters that match much)
// and the GIN bitmap then a sort (selective filters); the statistics of
// props are whole documents, so its estimate of a containment is the
// share of sampled documents that hold every filter at once.
//
// Containment is equality for strings, numbers (numerically: 4 and 4.0),
// booleans and null, but not for objects and arrays ({"x":1,"y":2} and
// [1,2] contain {"x":1} and [1]), hence the -> rechecks for those values
// alone. (The top-level exception that an array contains a scalar does not
// apply below the top level: {"v":{"t":["x"]}} does not contain
// {"v":{"t":"x"}}.)
//
// The search is a read that tolerates staleness (ReadStale): it runs on a
// read replica in rotation that has replayed this store's last commit,
// bounded by ReplicaReadTimeout there, else on the primary, and counts as
// a read of the replica that served it (ReplicaStatus.Reads).

// varsJSON is the vars column of c: {name: value} of every variable whose
// value PostgreSQL's jsonb can hold (see jsonbSafe).
func varsJSON(c *model.Context) ([]byte, error) {
	if len(c.Variables) == 0 {
		return []byte("{}"), nil
	}
	m := make(map[string]json.RawMessage, len(c.Variables))
	for name, v := range c.Variables {
		raw := v.Value
		if len(raw) == 0 {
			raw = json.RawMessage("null")
		}
		if !jsonbSafe(raw) {
			continue
		}
		m[name] = raw
	}
	return json.Marshal(m)
}

// labelsJSON is the labels column of c.
func labelsJSON(c *model.Context) ([]byte, error) {
	if len(c.Labels) == 0 {
		return []byte("{}"), nil
	}
	return json.Marshal(c.Labels)
}

// searchColumns are the labels, vars and props columns of c, as Commit
// writes them. props is {"n": tenant, "l": labels, "v": vars}, l and v
// left out when empty.
func searchColumns(c *model.Context) (labels, vars, props []byte, err error) {
	if labels, err = labelsJSON(c); err != nil {
		return nil, nil, nil, fmt.Errorf("encode labels of %s: %w", c.Path, err)
	}
	if vars, err = varsJSON(c); err != nil {
		return nil, nil, nil, fmt.Errorf("encode variables of %s: %w", c.Path, err)
	}
	tenant, err := json.Marshal(c.Tenant)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("encode tenant of %s: %w", c.Path, err)
	}
	return labels, vars, propsJSON(tenant, labels, vars), nil
}

// propsJSON joins the tenant (a JSON string) and the labels and vars
// objects into the props document.
func propsJSON(tenant, labels, vars []byte) []byte {
	b := make([]byte, 0, len(tenant)+len(labels)+len(vars)+16)
	b = append(b, `{"n":`...)
	b = append(b, tenant...)
	if string(labels) != "{}" {
		b = append(b, `,"l":`...)
		b = append(b, labels...)
	}
	if string(vars) != "{}" {
		b = append(b, `,"v":`...)
		b = append(b, vars...)
	}
	return append(b, '}')
}

// searchSQL builds the statement and arguments of q (normalized).
func searchSQL(q *SearchQuery) (string, []any, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if !q.Prefix.IsRoot() {
		from, to := belowRange(q.Prefix)
		p := arg(string(q.Prefix))
		// The range is an index condition; the OR drops the siblings
		// between /a and /a/ (such as /a-b).
		where = append(where, fmt.Sprintf("path >= %s AND path < %s AND (path = %s OR path >= %s)", p, arg(to), p, arg(from)))
	}
	if q.After != "" {
		where = append(where, "path > "+arg(string(q.After)))
	}
	if q.Type != "" {
		where = append(where, "type = "+arg(q.Type))
	}
	// One tenant is a filter of the containment; several are a list the
	// rows found are checked against.
	var tenant *string
	switch {
	case len(q.Tenants) == 1:
		tenant = &q.Tenants[0]
	case q.Tenants != nil:
		where = append(where, "tenant = ANY("+arg(q.Tenants)+"::text[])")
	}
	if len(q.Labels) > 0 || len(q.Vars) > 0 || tenant != nil {
		var filter struct {
			N *string                    `json:"n,omitempty"`
			L map[string]string          `json:"l,omitempty"`
			V map[string]json.RawMessage `json:"v,omitempty"`
		}
		filter.N, filter.L, filter.V = tenant, q.Labels, q.Vars
		f, err := json.Marshal(filter)
		if err != nil {
			return "", nil, err
		}
		where = append(where, "props @> "+arg(string(f))+"::jsonb")
		for name, raw := range q.Vars {
			if !isContainer(raw) {
				continue // containment is equality
			}
			where = append(where, fmt.Sprintf("props -> 'v' -> %s = %s::jsonb", arg(name), arg(string(raw))))
		}
	}
	sql := "SELECT doc FROM contexts"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY path LIMIT " + arg(q.Limit+1)
	return sql, args, nil
}

// isContainer reports whether the JSON value raw (valid) is an object or
// an array.
func isContainer(raw json.RawMessage) bool {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	return len(raw) > 0 && (raw[0] == '{' || raw[0] == '[')
}

// searchExecMode sends a search as an unnamed statement, planned for its
// values each time. pgx's default, a cached prepared statement, lets
// PostgreSQL switch to a generic plan after five runs: one plan for every
// filter, costed with a default selectivity for @>, which walks the
// primary key in path order, reading the whole subtree when the filter is
// rare (a hostname: 1,000,000 rows instead of one).
const searchExecMode = pgx.QueryExecModeExec

// Search answers q from a read replica when one fits, else the primary.
// It ends early, with ctx's error, when ctx or the store ends.
func (s *Postgres) Search(ctx context.Context, q SearchQuery) (SearchPage, error) {
	if err := normalizeSearch(&q); err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	sql, args, err := searchSQL(&q)
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	var page SearchPage
	err = s.ReadStale(ctx, func(ctx context.Context, pool *pgxpool.Pool) error {
		page = SearchPage{}
		rows, err := pool.Query(ctx, sql, append([]any{searchExecMode}, args...)...)
		if err != nil {
			return err
		}
		var doc []byte
		_, err = pgx.ForEachRow(rows, []any{&doc}, func() error {
			if len(page.Contexts) == q.Limit {
				page.Next = page.Contexts[q.Limit-1].Path
				return nil
			}
			var c model.Context
			if err := model.Unmarshal(doc, &c); err != nil {
				return fmt.Errorf("decode context: %w", err)
			}
			page.Contexts = append(page.Contexts, &c)
			return nil
		})
		return err
	})
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search %s: %w", q.Prefix, err)
	}
	return page, nil
}

// backfillBatch is how many rows backfillSearch fills per statement.
const backfillBatch = 1000

// backfillSearch fills the search columns (vars, props) of rows written
// before they existed (migrations 0002 and 0003), from their CBOR docs, a
// batch at a time. It is idempotent, so processes that open the database
// at once may all run it.
func backfillSearch(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	total := 0
	for {
		rows, err := pool.Query(ctx, `SELECT path, doc FROM contexts WHERE props IS NULL OR vars IS NULL
			ORDER BY path LIMIT $1`, backfillBatch)
		if err != nil {
			return err
		}
		var (
			paths, vars, props []string
			path               string
			doc                []byte
		)
		_, err = pgx.ForEachRow(rows, []any{&path, &doc}, func() error {
			var c model.Context
			if err := model.Unmarshal(doc, &c); err != nil {
				return fmt.Errorf("decode context %s: %w", path, err)
			}
			_, v, pr, err := searchColumns(&c)
			if err != nil {
				return err
			}
			paths, vars, props = append(paths, path), append(vars, string(v)), append(props, string(pr))
			return nil
		})
		if err != nil {
			return fmt.Errorf("backfill search columns: %w", err)
		}
		if len(paths) == 0 {
			if total > 0 {
				log.Info("filled the search columns of existing contexts", "contexts", total)
			}
			return nil
		}
		if _, err := pool.Exec(ctx, `UPDATE contexts c SET vars = u.v, props = u.pr
			FROM unnest($1::text[], $2::jsonb[], $3::jsonb[]) AS u(p, v, pr)
			WHERE c.path = u.p AND (c.props IS NULL OR c.vars IS NULL)`, paths, vars, props); err != nil {
			return fmt.Errorf("backfill search columns: %w", err)
		}
		total += len(paths)
	}
}

// commitContextColumns are the columns of the contexts table, in the order
// commitContextRow gives them.
var commitContextColumns = []string{"path", "parent", "name", "type", "tenant", "labels", "vars", "props", "version", "doc"}

// commitContextRow is the contexts row of c, as Commit writes it.
func commitContextRow(c *model.Context) ([]any, error) {
	doc, err := model.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode context %s: %w", c.Path, err)
	}
	return contextRow(c, doc)
}

// contextRow is the contexts row of c, whose CBOR encoding is doc.
func contextRow(c *model.Context, doc []byte) ([]any, error) {
	lab, vars, props, err := searchColumns(c)
	if err != nil {
		return nil, err
	}
	var parent *string
	if !c.Path.IsRoot() {
		p := string(c.Path.Parent())
		parent = &p
	}
	return []any{string(c.Path), parent, c.Path.Name(), c.Type, c.Tenant, string(lab), string(vars), string(props), int64(c.Version), doc}, nil
}

// CopyContexts writes contexts that do not exist yet with COPY, the rows
// exactly as Commit writes them, but without change-log entries and
// without their ancestors: it is for loading benchmarks and imports into a
// database no model is running on, never for a live node. It returns how
// many rows it wrote.
func (s *Postgres) CopyContexts(ctx context.Context, cs []*model.Context) (int64, error) {
	if s.readOnly {
		return 0, fmt.Errorf("store: copy contexts: %w", ErrReadOnly)
	}
	i := 0
	var rowErr error
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(cs) {
			return nil, nil
		}
		row, err := commitContextRow(cs[i])
		i++
		if err != nil {
			rowErr = err
		}
		return row, err
	})
	n, err := s.pool.CopyFrom(ctx, pgx.Identifier{"contexts"}, commitContextColumns, src)
	if rowErr != nil {
		err = rowErr
	}
	if err != nil {
		return n, fmt.Errorf("store: copy contexts: %w", err)
	}
	return n, nil
}

// ExplainSearch returns the plan (with analyze, EXPLAIN ANALYZE's account
// of a run) of q on the pool that would serve it now, and that pool's
// name, for benchmarks and for operators looking at a slow search.
func (s *Postgres) ExplainSearch(ctx context.Context, q SearchQuery, analyze bool) (plan, served string, err error) {
	if err := normalizeSearch(&q); err != nil {
		return "", "", err
	}
	sql, args, err := searchSQL(&q)
	if err != nil {
		return "", "", err
	}
	explain := "EXPLAIN "
	if analyze {
		explain = "EXPLAIN (ANALYZE, BUFFERS) "
	}
	pool, served := s.ReadPool()
	rows, err := pool.Query(ctx, explain+sql, append([]any{searchExecMode}, args...)...)
	if err != nil {
		return "", served, err
	}
	var b bytes.Buffer
	var line string
	_, err = pgx.ForEachRow(rows, []any{&line}, func() error {
		b.WriteString(line)
		b.WriteByte('\n')
		return nil
	})
	return b.String(), served, err
}
