package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL schema is a numbered series of migrations,
// migrations/NNNN_what.sql, applied in order at open. A migration, once
// released, is never edited: changes are new files.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrationLock is the pg_advisory_xact_lock key that serialises migration
// runs of every Strata process sharing a database ("strata" in ASCII).
const migrationLock = 0x737472617461

func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, n := range names {
		base := strings.TrimPrefix(n, "migrations/")
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive number and _", base)
		}
		text, err := migrationFiles.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(text)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := range out {
		if out[i].version != i+1 {
			return nil, fmt.Errorf("migrations must be numbered 1..n without gaps; found %s at position %d", out[i].name, i+1)
		}
	}
	return out, nil
}

// migrate brings the schema up to date in one transaction holding an
// advisory lock, so that several processes opening the same database at
// once apply each migration exactly once: the others wait for the lock and
// then find nothing left to do. A database whose schema is newer than this
// binary knows is refused rather than written with an older idea of it.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// The lock comes first: CREATE TABLE IF NOT EXISTS is not safe
		// against a concurrent creator.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLock)); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version integer PRIMARY KEY,
			name    text NOT NULL,
			applied timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
			return err
		}
		if current > len(ms) {
			return fmt.Errorf("database schema is at version %d, newer than this binary's %d", current, len(ms))
		}
		for _, m := range ms[current:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return err
			}
			log.Info("applied schema migration", "version", m.version, "name", m.name)
		}
		return nil
	})
}

// ErrSchemaBehind refuses a read-only open on a database whose schema is
// older than this binary's: only a writer migrates, so a follower waits
// (tries again) until the writer has.
var ErrSchemaBehind = errors.New("database schema is behind this binary")

// checkSchema is a read-only store's migrate: it writes nothing, and
// accepts only a schema at exactly this binary's version.
func checkSchema(ctx context.Context, pool *pgxpool.Pool) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	var current int
	err = pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table: never migrated
		current, err = 0, nil
	}
	if err != nil {
		return err
	}
	switch {
	case current > len(ms):
		return fmt.Errorf("database schema is at version %d, newer than this binary's %d", current, len(ms))
	case current < len(ms):
		return fmt.Errorf("%w: at version %d, this binary's is %d; a writer migrates it when it opens", ErrSchemaBehind, current, len(ms))
	}
	return nil
}
