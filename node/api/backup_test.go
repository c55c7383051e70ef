package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/audit"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/store"
)

// storeBackups takes backups of a Badger store, as the node does.
type storeBackups struct {
	st  *store.Badger
	err error // what WriteTo fails with after writing half the backup
}

func (b storeBackups) BeginBackup(context.Context) (Backup, error) {
	src, err := b.st.Backup("test")
	if err != nil {
		return nil, err
	}
	return &storeBackup{src, b.err}, nil
}

type storeBackup struct {
	store.BackupSource
	err error
}

func (b *storeBackup) LastSeq() uint64 { return b.Header().LastSeq }

func (b *storeBackup) WriteTo(w io.Writer) (int64, error) {
	if b.err == nil {
		return b.BackupSource.WriteTo(w)
	}
	var buf bytes.Buffer
	b.BackupSource.WriteTo(&buf)
	n, _ := w.Write(buf.Bytes()[:buf.Len()/2])
	return int64(n), b.err
}

func withBackups(fail error) envOption {
	return func(c *Config, _ *auth.Config, _ *model.Config) {
		c.Backups = storeBackups{st: c.Feed.(*store.Badger), err: fail}
	}
}

// backupRecords polls the trail until it holds n backup records and
// returns them, newest first.
func (e *env) backupRecords(n int) []audit.Record {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out struct {
			Records []audit.Record `json:"records"`
		}
		r := e.do("GET", "/api/v1/audit?limit=1000", e.admin, nil)
		e.want(r, http.StatusOK, "")
		r.json(e.t, &out)
		var got []audit.Record
		for _, rec := range out.Records {
			if rec.Op == "backup" {
				got = append(got, rec)
			}
		}
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				e.t.Fatalf("%d backup records, want %d: %+v", len(got), n, got)
			}
			return got
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// POST /api/v1/backup streams a whole, checksummed backup to a system
// administrator, and to nobody else: tenant admins and operators are
// refused, and every attempt is in the audit trail.
func TestBackupEndpoint(t *testing.T) {
	e := newEnv(t, withBackups(nil))
	cast := e.tenants()
	for _, tok := range []string{cast.ada, cast.gina, cast.alice, cast.vera} {
		e.want(e.do("POST", "/api/v1/backup", tok, nil), http.StatusForbidden, codeForbidden)
	}
	e.want(e.do("POST", "/api/v1/backup", "", nil), http.StatusUnauthorized, "")
	e.want(e.do("GET", "/api/v1/backup", e.admin, nil), http.StatusMethodNotAllowed, "")

	last, err := e.store.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/api/v1/backup", e.admin, nil)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != apitypes.BackupContentType {
		t.Fatalf("backup: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if got := r.header.Get(apitypes.BackupLastSeqHeader); got != strconv.FormatUint(last, 10) {
		t.Fatalf("last seq header %q, want %d", got, last)
	}
	h, err := store.VerifyBackup(bytes.NewReader(r.body))
	if err != nil || h.LastSeq != last || h.Store != store.BackupBadger {
		t.Fatalf("verify: %+v, %v", h, err)
	}
	recs := e.backupRecords(5)
	if rec := recs[0]; rec.User != "admin" || !rec.System || rec.Outcome != audit.OK || rec.Target != "last_seq "+strconv.FormatUint(last, 10) {
		t.Fatalf("audit of the backup: %+v", rec)
	}
	for _, rec := range recs[1:] {
		if rec.Outcome != codeForbidden || rec.System {
			t.Fatalf("audit of a refusal: %+v", rec)
		}
	}

	// A node without backups says so.
	e2 := newEnv(t)
	e2.want(e2.do("POST", "/api/v1/backup", e2.admin, nil), http.StatusNotImplemented, codeNotImplemented)
}

// A backup that fails once its answer started is cut, not ended: the
// client sees a broken transfer, and the trail the failure.
func TestBackupCutOnFailure(t *testing.T) {
	e := newEnv(t, withBackups(errors.New("disk on fire")))
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	// Cut before the headers went out (the answer is buffered) or after.
	res, err := http.DefaultClient.Do(req)
	if err == nil {
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
		if _, err := io.ReadAll(res.Body); err == nil {
			t.Fatal("a cut backup read to a clean end")
		}
	}
	if rec := e.backupRecords(1)[0]; rec.Outcome == audit.OK || rec.Outcome == "" {
		t.Fatalf("audit of a failed backup: %+v", rec)
	}
}

// endlessBackups stream without end, as a huge store would.
type endlessBackups struct{}

func (endlessBackups) BeginBackup(context.Context) (Backup, error) { return endless{}, nil }

type endless struct{}

func (endless) LastSeq() uint64 { return 1 }
func (endless) Close() error    { return nil }
func (endless) WriteTo(w io.Writer) (int64, error) {
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		k, err := w.Write(chunk)
		n += int64(k)
		if err != nil {
			return n, err
		}
	}
}

// A backup under way ends when the API shuts down (the node closes its
// store next), cut rather than ended.
func TestBackupEndsAtShutdown(t *testing.T) {
	e := newEnv(t, func(c *Config, _ *auth.Config, _ *model.Config) { c.Backups = endlessBackups{} })
	req, _ := http.NewRequest("POST", e.srv.URL+"/api/v1/backup", nil)
	req.Header.Set("Authorization", "Bearer "+e.admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if _, err := io.ReadFull(res.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, res.Body)
		done <- err
	}()
	e.api.Shutdown()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the backup ended cleanly at shutdown")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the backup goes on after the API shut down")
	}
}
