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

// Inventory search on PostgreSQL (see search.go). contexts.vars holds each
// context's variable values as one JSON object, written with the context
// at commit (varsJSON). A query is one statement:
//
//	WHERE <path range of the subtree> AND path > after
//	  AND type = ... AND labels @> {...} AND vars @> {...}
//	  AND vars -> name = value ...   (exact equality, see below)
//	  AND tenant = ANY(...)
//	ORDER BY path LIMIT limit+1
//
// The GIN indexes (jsonb_path_ops) on labels and vars answer the
// containment filters; the primary key gives path order and the subtree
// range. Containment alone is not equality for objects and arrays
// ({"a":{"x":1,"y":2}} @> {"a":{"x":1}}), hence the -> rechecks, which cost nothing on the rows the
// indexes found. The planner picks, from column statistics, between
// walking the primary key in path order (filters that match much) and
// bitmap scans of the GIN indexes then a sort (selective filters).
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
	if len(q.Labels) > 0 {
		l, err := json.Marshal(q.Labels)
		if err != nil {
			return "", nil, err
		}
		where = append(where, "labels @> "+arg(string(l))+"::jsonb")
	}
	if len(q.Vars) > 0 {
		v, err := json.Marshal(q.Vars)
		if err != nil {
			return "", nil, err
		}
		where = append(where, "vars @> "+arg(string(v))+"::jsonb")
		for name, raw := range q.Vars {
			where = append(where, fmt.Sprintf("vars -> %s = %s::jsonb", arg(name), arg(string(raw))))
		}
	}
	if q.Tenants != nil {
		where = append(where, "tenant = ANY("+arg(q.Tenants)+"::text[])")
	}
	sql := "SELECT doc FROM contexts"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY path LIMIT " + arg(q.Limit+1)
	return sql, args, nil
}

// Search answers q from a read replica when one fits, else the primary.
// It ends early, with ctx's error, when ctx or the store ends.
func (s *Postgres) Search(ctx context.Context, q SearchQuery) (SearchPage, error) {
	if err := q.normalize(); err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	sql, args, err := searchSQL(&q)
	if err != nil {
		return SearchPage{}, fmt.Errorf("store: search: %w", err)
	}
	var page SearchPage
	err = s.ReadStale(ctx, func(ctx context.Context, pool *pgxpool.Pool) error {
		page = SearchPage{}
		rows, err := pool.Query(ctx, sql, args...)
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

// backfillBatch is how many rows backfillVars fills per statement.
const backfillBatch = 1000

// backfillVars fills the vars column of rows written before it existed
// (migration 0002), from their CBOR docs, a batch at a time. It is
// idempotent, so processes that open the database at once may all run it.
func backfillVars(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	total := 0
	for {
		rows, err := pool.Query(ctx, `SELECT path, doc FROM contexts WHERE vars IS NULL ORDER BY path LIMIT $1`, backfillBatch)
		if err != nil {
			return err
		}
		var (
			paths []string
			vars  []string
			path  string
			doc   []byte
		)
		_, err = pgx.ForEachRow(rows, []any{&path, &doc}, func() error {
			var c model.Context
			if err := model.Unmarshal(doc, &c); err != nil {
				return fmt.Errorf("decode context %s: %w", path, err)
			}
			v, err := varsJSON(&c)
			if err != nil {
				return err
			}
			paths, vars = append(paths, path), append(vars, string(v))
			return nil
		})
		if err != nil {
			return fmt.Errorf("backfill vars: %w", err)
		}
		if len(paths) == 0 {
			if total > 0 {
				log.Info("filled the search column of existing contexts", "contexts", total)
			}
			return nil
		}
		if _, err := pool.Exec(ctx, `UPDATE contexts c SET vars = u.v
			FROM unnest($1::text[], $2::jsonb[]) AS u(p, v) WHERE c.path = u.p AND c.vars IS NULL`, paths, vars); err != nil {
			return fmt.Errorf("backfill vars: %w", err)
		}
		total += len(paths)
	}
}

// commitContextColumns are the columns of the contexts table, in the order
// commitContextRow gives them.
var commitContextColumns = []string{"path", "parent", "name", "type", "tenant", "labels", "vars", "version", "doc"}

// commitContextRow is the contexts row of c, as Commit writes it.
func commitContextRow(c *model.Context) ([]any, error) {
	doc, err := model.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode context %s: %w", c.Path, err)
	}
	lab, err := labelsJSON(c)
	if err != nil {
		return nil, fmt.Errorf("encode labels of %s: %w", c.Path, err)
	}
	vars, err := varsJSON(c)
	if err != nil {
		return nil, fmt.Errorf("encode variables of %s: %w", c.Path, err)
	}
	var parent *string
	if !c.Path.IsRoot() {
		p := string(c.Path.Parent())
		parent = &p
	}
	return []any{string(c.Path), parent, c.Path.Name(), c.Type, c.Tenant, string(lab), string(vars), int64(c.Version), doc}, nil
}

// CopyContexts writes contexts that do not exist yet with COPY, the rows
// exactly as Commit writes them, but without change-log entries and
// without their ancestors: it is for loading benchmarks and imports into a
// database no model is running on, never for a live node. It returns how
// many rows it wrote.
func (s *Postgres) CopyContexts(ctx context.Context, cs []*model.Context) (int64, error) {
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
	if err := q.normalize(); err != nil {
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
	rows, err := pool.Query(ctx, explain+sql, args...)
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
