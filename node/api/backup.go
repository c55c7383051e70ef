package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/auth"
)

// Online backups (docs/api.md, "Backups"): POST /api/v1/backup streams a
// backup of the node's whole store, written from one consistent view
// while writes go on. A backup holds every tenant's data, users and
// tokens: system administrators only. Once the answer has started, a
// failure can no longer change its status: the connection is cut
// instead, so a client never mistakes a broken backup for a whole one
// (and the format's checksums tell it too).

// Backups takes backups of the node's store.
type Backups interface {
	// BeginBackup takes the backup's view now: it holds every write
	// acknowledged before the call. The caller closes the result.
	BeginBackup(ctx context.Context) (Backup, error)
}

// Backup is a view of the store being written as a backup.
type Backup interface {
	// LastSeq is the change log's last sequence number in the view.
	LastSeq() uint64
	// WriteTo writes the whole backup file, once.
	WriteTo(w io.Writer) (int64, error)
	Close() error
}

func (s *Server) backup(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if !p.System {
		return fmt.Errorf("%w: backups are for system administrators (a backup holds every tenant's data)", auth.ErrForbidden)
	}
	if s.cfg.Backups == nil {
		return apiError(http.StatusNotImplemented, codeNotImplemented, "this node takes no backups")
	}
	start := time.Now()
	// The backup ends when the client goes or the API shuts down (the
	// node closes the store after that).
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.quit, cancel)()
	b, err := s.cfg.Backups.BeginBackup(ctx)
	if err != nil {
		return err
	}
	defer b.Close()
	seq := b.LastSeq()
	noteAudit(r, func(e *auditEntry) { e.rec.Target = "last_seq " + strconv.FormatUint(seq, 10) })
	h := w.Header()
	h.Set("Content-Type", apitypes.BackupContentType)
	h.Set(apitypes.BackupLastSeqHeader, strconv.FormatUint(seq, 10))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	n, err := b.WriteTo(ctxWriter{ctx: ctx, w: w})
	if err != nil {
		err = fmt.Errorf("backup cut after %d bytes: %w", n, err)
		if ctx.Err() == nil {
			s.log.Error("backup failed", "by", p.User, "err", err)
		} else {
			s.log.Info("backup cut: the client went or the node is stopping", "by", p.User, "bytes", n)
		}
		if e, ok := r.Context().Value(auditKey{}).(*auditEntry); ok {
			s.finishAudit(r, e, err)
		}
		// net/http closes the connection (HTTP/2: resets the stream)
		// without ending the body as if it were complete.
		panic(http.ErrAbortHandler)
	}
	s.log.Info("backup taken", "by", p.User, "bytes", n, "last_seq", seq, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// ctxWriter stops a backup's writes once ctx is done: a Badger view is
// written without a context.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}
