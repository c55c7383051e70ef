package store

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Backups of the PostgreSQL store (backup.go has the file's header). The
// backup is one REPEATABLE READ READ ONLY transaction on the primary: it
// sees exactly the transactions committed before its first statement,
// whatever commits meanwhile, and exports every table of the schema
// (schema_migrations aside: the header names its version) with COPY ...
// TO STDOUT in PostgreSQL's binary format. The body:
//
//	per table: 'T' | uvarint n | table name | uvarint n | columns, comma-separated
//	           'D' | uvarint n (1..maxTableChunk) | n bytes of COPY data   (any number)
//	           'E' | u64 rows
//	end:       'Z' | u32 tables | u32 CRC-32C of every body byte before it
//
// A restore creates the schema as a node does at start, then COPYs each
// table back FROM STDIN in one transaction, which it commits only once
// the checksum at the end matched and every table holds the rows the
// backup counted.

const (
	frameTable = 'T'
	frameData  = 'D'
	frameEnd   = 'E'
	frameLast  = 'Z'
	// maxTableChunk bounds one data frame (written in chunks of
	// tableChunk).
	maxTableChunk = 1 << 20
	tableChunk    = 256 << 10
	// maxTableName bounds a table's name and its column list.
	maxTableName = 4096
	// maxBackupTables bounds the tables of one backup.
	maxBackupTables = 1024
)

// Backup starts the transaction of a backup of node; its first statement
// fixes what the backup holds. The caller closes the result, which holds
// one connection of the pool until then.
func (s *Postgres) Backup(ctx context.Context, node string) (BackupSource, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: backup: %w", err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("store: backup: %w", err)
	}
	b := &pgBackup{conn: conn, tx: tx, ctx: ctx}
	var last int64
	err = tx.QueryRow(ctx, `SELECT last_seq, (SELECT coalesce(max(version), 0) FROM schema_migrations) FROM meta`).Scan(&last, &b.h.Schema)
	if err == nil {
		b.tables, err = backupTables(ctx, tx)
	}
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("store: backup: %w", err)
	}
	b.h.Store, b.h.Node, b.h.Time, b.h.LastSeq = BackupPostgres, node, time.Now().UTC(), uint64(last)
	return b, nil
}

type pgTable struct {
	name    string
	columns []string
}

// backupTables lists the schema's tables and their columns, in order.
func backupTables(ctx context.Context, tx pgx.Tx) ([]pgTable, error) {
	rows, err := tx.Query(ctx, `SELECT c.table_name::text, c.column_name::text
		FROM information_schema.columns c
		JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
		WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' AND c.table_name <> 'schema_migrations'
		ORDER BY c.table_name, c.ordinal_position`)
	if err != nil {
		return nil, err
	}
	var ts []pgTable
	for rows.Next() {
		var t, c string
		if err := rows.Scan(&t, &c); err != nil {
			return nil, err
		}
		if len(ts) == 0 || ts[len(ts)-1].name != t {
			ts = append(ts, pgTable{name: t})
		}
		ts[len(ts)-1].columns = append(ts[len(ts)-1].columns, c)
	}
	return ts, rows.Err()
}

type pgBackup struct {
	conn   *pgxpool.Conn
	tx     pgx.Tx
	ctx    context.Context
	h      BackupHeader
	tables []pgTable
}

func (b *pgBackup) Header() BackupHeader { return b.h }

func (b *pgBackup) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	if err := writeBackupHeader(cw, b.h); err != nil {
		return cw.n, err
	}
	tw := newTableWriter(cw)
	for _, t := range b.tables {
		tw.table(t.name, t.columns)
		sql := fmt.Sprintf(`COPY %s (%s) TO STDOUT (FORMAT binary)`, pgx.Identifier{t.name}.Sanitize(), columnList(t.columns))
		tag, err := b.tx.Conn().PgConn().CopyTo(b.ctx, tw, sql)
		if err != nil {
			return cw.n, fmt.Errorf("store: backup: table %s: %w", t.name, err)
		}
		tw.end(tag.RowsAffected())
	}
	return cw.n, tw.close()
}

func (b *pgBackup) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.tx.Rollback(ctx)
	b.conn.Release()
	return nil
}

func columnList(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// tableWriter frames a PostgreSQL backup's body and keeps its checksum.
// Write takes COPY data of the current table.
type tableWriter struct {
	w      *bufio.Writer
	crc    hash.Hash32
	chunk  []byte
	tables uint32
	err    error
}

func newTableWriter(w io.Writer) *tableWriter {
	tw := &tableWriter{crc: crc32.New(walCRC), chunk: make([]byte, 0, tableChunk)}
	tw.w = bufio.NewWriterSize(io.MultiWriter(w, tw.crc), 64<<10)
	return tw
}

func (tw *tableWriter) put(p []byte) {
	if tw.err == nil {
		_, tw.err = tw.w.Write(p)
	}
}

func (tw *tableWriter) bytes(p []byte) {
	tw.put(binary.AppendUvarint(nil, uint64(len(p))))
	tw.put(p)
}

func (tw *tableWriter) table(name string, columns []string) {
	tw.put([]byte{frameTable})
	tw.bytes([]byte(name))
	tw.bytes([]byte(strings.Join(columns, ",")))
	tw.tables++
}

func (tw *tableWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(tw.chunk)-len(tw.chunk))
		tw.chunk = append(tw.chunk, p[:k]...)
		p = p[k:]
		if len(tw.chunk) == cap(tw.chunk) {
			tw.flushChunk()
		}
	}
	return n, tw.err
}

func (tw *tableWriter) flushChunk() {
	if len(tw.chunk) > 0 {
		tw.put([]byte{frameData})
		tw.bytes(tw.chunk)
		tw.chunk = tw.chunk[:0]
	}
}

func (tw *tableWriter) end(rows int64) {
	tw.flushChunk()
	tw.put([]byte{frameEnd})
	tw.put(binary.BigEndian.AppendUint64(nil, uint64(rows)))
}

func (tw *tableWriter) close() error {
	tw.put([]byte{frameLast})
	tw.put(binary.BigEndian.AppendUint32(nil, tw.tables))
	if tw.err != nil {
		return tw.err
	}
	if err := tw.w.Flush(); err != nil {
		return err
	}
	// The checksum covers everything before it, so it goes out directly.
	tw.put(binary.BigEndian.AppendUint32(nil, tw.crc.Sum32()))
	if tw.err == nil {
		tw.err = tw.w.Flush()
	}
	return tw.err
}

// tableReader reads a PostgreSQL backup's body, checking its checksum.
type tableReader struct {
	r      *bufio.Reader
	crc    hash.Hash32
	tables uint32
	cur    *tableData // the table being read
	done   bool
}

func newTableReader(r *bufio.Reader) *tableReader {
	return &tableReader{r: r, crc: crc32.New(walCRC)}
}

// tableData is one table of a backup: its COPY data is read from it, up
// to the table's end frame; Rows is set once EOF is returned.
type tableData struct {
	tr      *tableReader
	Name    string
	Columns []string
	Rows    int64
	left    uint64 // bytes left in the current data frame
	ended   bool
	err     error // the last read error (COPY FROM reports its own)
}

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func (tr *tableReader) byte() (byte, error) {
	c, err := tr.r.ReadByte()
	if err != nil {
		return 0, cutShort(err)
	}
	tr.crc.Write([]byte{c})
	return c, nil
}

func (tr *tableReader) full(p []byte) error {
	if _, err := io.ReadFull(tr.r, p); err != nil {
		return cutShort(err)
	}
	tr.crc.Write(p)
	return nil
}

func (tr *tableReader) uvarint(max uint64) (uint64, error) {
	var b [binary.MaxVarintLen64]byte
	for i := range b {
		c, err := tr.byte()
		if err != nil {
			return 0, err
		}
		b[i] = c
		if c < 0x80 {
			v, n := binary.Uvarint(b[:i+1])
			if n <= 0 || v > max {
				return 0, fmt.Errorf("%w: bad length", ErrBadBackup)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: bad length", ErrBadBackup)
}

func (tr *tableReader) text() (string, error) {
	n, err := tr.uvarint(maxTableName)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if err := tr.full(b); err != nil {
		return "", err
	}
	return string(b), nil
}

// nextTable returns the next table, or nil once the end frame was read
// and the checksum matched. The previous table must have been read to its
// end.
func (tr *tableReader) nextTable() (*tableData, error) {
	if tr.cur != nil && !tr.cur.ended {
		return nil, errors.New("store: backup: a table was not read to its end")
	}
	if tr.done {
		return nil, nil
	}
	kind, err := tr.byte()
	if err != nil {
		return nil, err
	}
	switch kind {
	case frameTable:
	case frameLast:
		var b [4]byte
		if err := tr.full(b[:]); err != nil {
			return nil, err
		}
		if n := binary.BigEndian.Uint32(b[:]); n != tr.tables {
			return nil, fmt.Errorf("%w: %d tables read, the backup says %d", ErrBadBackup, tr.tables, n)
		}
		want := tr.crc.Sum32()
		if _, err := io.ReadFull(tr.r, b[:]); err != nil {
			return nil, cutShort(err)
		}
		if binary.BigEndian.Uint32(b[:]) != want {
			return nil, fmt.Errorf("%w: checksum mismatch", ErrBadBackup)
		}
		tr.done = true
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: frame %q where a table or the end belongs", ErrBadBackup, kind)
	}
	if tr.tables++; tr.tables > maxBackupTables {
		return nil, fmt.Errorf("%w: more than %d tables", ErrBadBackup, maxBackupTables)
	}
	t := &tableData{tr: tr}
	if t.Name, err = tr.text(); err != nil {
		return nil, err
	}
	cols, err := tr.text()
	if err != nil {
		return nil, err
	}
	t.Columns = strings.Split(cols, ",")
	for _, id := range append([]string{t.Name}, t.Columns...) {
		if !identRE.MatchString(id) {
			return nil, fmt.Errorf("%w: table %q or column %q is not a plain name", ErrBadBackup, t.Name, id)
		}
	}
	tr.cur = t
	return t, nil
}

// Read reads the table's COPY data.
func (t *tableData) Read(p []byte) (int, error) {
	n, err := t.read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

func (t *tableData) read(p []byte) (int, error) {
	tr := t.tr
	for t.left == 0 {
		if t.ended {
			return 0, io.EOF
		}
		kind, err := tr.byte()
		if err != nil {
			return 0, err
		}
		switch kind {
		case frameData:
			if t.left, err = tr.uvarint(maxTableChunk); err != nil {
				return 0, err
			}
			if t.left == 0 {
				return 0, fmt.Errorf("%w: empty data frame", ErrBadBackup)
			}
		case frameEnd:
			var b [8]byte
			if err := tr.full(b[:]); err != nil {
				return 0, err
			}
			t.Rows, t.ended = int64(binary.BigEndian.Uint64(b[:])), true
			if t.Rows < 0 {
				return 0, fmt.Errorf("%w: table %s: bad row count", ErrBadBackup, t.Name)
			}
		default:
			return 0, fmt.Errorf("%w: table %s: frame %q in its data", ErrBadBackup, t.Name, kind)
		}
	}
	if uint64(len(p)) > t.left {
		p = p[:t.left]
	}
	n, err := tr.r.Read(p)
	tr.crc.Write(p[:n])
	t.left -= uint64(n)
	if err != nil {
		return n, cutShort(err)
	}
	return n, nil
}

// RestorePostgresBackup reads a PostgreSQL backup into dst, whose tables
// must be empty (else ErrNotEmpty), in one transaction: committed only
// once the backup's checksum matched and every table holds the rows the
// backup counted. The records named in drop are then deleted (as
// RestoreBadgerBackup leaves them out). On error the database is as it
// was.
func RestorePostgresBackup(ctx context.Context, dst *Postgres, r io.Reader, drop ...RecordName) (BackupHeader, error) {
	if dst.readOnly {
		return BackupHeader{}, fmt.Errorf("store: restore: %w", ErrReadOnly)
	}
	br := bufio.NewReaderSize(r, 256<<10)
	h, err := ReadBackupHeader(br)
	if err != nil {
		return h, err
	}
	if h.Store != BackupPostgres {
		return h, fmt.Errorf("store: a backup of a %s store restores into %s only (to move a badger store to postgres, restore it into a data directory, then run strata store migrate)", h.Store, h.Store)
	}
	ms, err := loadMigrations()
	if err != nil {
		return h, err
	}
	if h.Schema > len(ms) {
		return h, fmt.Errorf("store: the backup's schema is at version %d, newer than this binary's %d: restore with the binary that took it", h.Schema, len(ms))
	}
	err = pgx.BeginFunc(ctx, dst.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE meta, contexts, events, log, records, fence IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		if err := checkEmpty(ctx, tx); err != nil {
			return err
		}
		counts := map[string]int64{}
		tr := newTableReader(br)
		for {
			t, err := tr.nextTable()
			if err != nil {
				return err
			}
			if t == nil {
				break
			}
			if _, dup := counts[t.Name]; dup {
				return fmt.Errorf("%w: table %s twice", ErrBadBackup, t.Name)
			}
			n, err := restoreTable(ctx, tx, t)
			if err != nil {
				return err
			}
			counts[t.Name] = n
			dst.log.Info("restored", "table", t.Name, "rows", n)
		}
		if err := atEOF(br); err != nil {
			return err
		}
		// Verified before the commit: every table holds what the backup
		// counted (the rows the schema's migrations inserted were
		// replaced by the backup's).
		for name, want := range counts {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{name}.Sanitize()).Scan(&n); err != nil {
				return err
			}
			if n != want {
				return fmt.Errorf("verify: %s has %d rows, the backup %d", name, n, want)
			}
		}
		for _, name := range []string{"meta", "contexts", "events", "log", "records"} {
			if _, ok := counts[name]; !ok {
				return fmt.Errorf("%w: no table %s", ErrBadBackup, name)
			}
		}
		// The fence guarded the backed-up database against its cluster's
		// deposed writers; the restored one is claimed by nobody yet (a
		// single node may write it, a cluster's first leader claims it).
		if _, err := tx.Exec(ctx, `UPDATE fence SET term = 0, replica = '', claimed = now()`); err != nil {
			return err
		}
		for _, d := range drop {
			if _, err := tx.Exec(ctx, `DELETE FROM records WHERE kind = $1 AND key = $2`, []byte(d.Kind), []byte(d.Key)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return h, fmt.Errorf("store: restore: %w", err)
	}
	dst.listen.advance(h.LastSeq)
	return h, nil
}

// restoreTable replaces the rows of one table (those a migration
// inserted) by the backup's, checking the count COPY reports.
func restoreTable(ctx context.Context, tx pgx.Tx, t *tableData) (int64, error) {
	name := pgx.Identifier{t.Name}.Sanitize()
	if _, err := tx.Exec(ctx, `DELETE FROM `+name); err != nil {
		return 0, fmt.Errorf("table %s: %w", t.Name, err)
	}
	sql := fmt.Sprintf(`COPY %s (%s) FROM STDIN (FORMAT binary)`, name, columnList(t.Columns))
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, t, sql)
	if t.err != nil {
		return 0, t.err // what stopped the COPY, rather than how PostgreSQL saw it
	}
	if err != nil {
		return 0, fmt.Errorf("table %s: %w", t.Name, err)
	}
	if !t.ended {
		// COPY stopped at its own end-of-data marker: read the frame
		// after it, which must be the table's end.
		if n, err := io.Copy(io.Discard, t); err != nil {
			return 0, err
		} else if n > 0 {
			return 0, fmt.Errorf("%w: table %s: %d bytes after the COPY data", ErrBadBackup, t.Name, n)
		}
	}
	if tag.RowsAffected() != t.Rows {
		return 0, fmt.Errorf("%w: table %s: %d rows restored, the backup says %d", ErrBadBackup, t.Name, tag.RowsAffected(), t.Rows)
	}
	return t.Rows, nil
}
