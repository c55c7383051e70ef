package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store/pgtest"
)

// fillStore writes contexts (nested, with labels, tenants and variables),
// events of every level, records of several kinds (one empty, one
// deleted), a deleted context, and compacts the log so that it no longer
// starts at 1.
func fillStore(t *testing.T, s model.Store) {
	t.Helper()
	m, err := model.New(model.Config{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	apply := func(mut model.Mutation) {
		t.Helper()
		if _, err := m.Apply(ctx, mut); err != nil {
			t.Fatalf("%+v: %v", mut, err)
		}
	}
	temp, err := model.NewVariable([]byte(`{"c": 21.5}`), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		site := fmt.Sprintf("/sites/s%d", i%3)
		apply(model.Mutation{Op: model.OpPut, Path: model.Path(fmt.Sprintf("%s/pump-%02d", site, i)), Type: "device",
			Tenant: fmt.Sprintf("t%d", i%2), Labels: map[string]string{"site": site, "n": fmt.Sprint(i)},
			Variables: map[string]model.Variable{"temp": temp}})
	}
	apply(model.Mutation{Op: model.OpPut, Path: "/sites/s0-b", Type: "site"}) // shares /sites/s0's bytes
	for i := range 40 {
		level := []model.Level{model.LevelInfo, model.LevelWarning, model.LevelAlert}[i%3]
		apply(model.Mutation{Op: model.OpEvent, Path: model.Path(fmt.Sprintf("/sites/s%d/pump-%02d", i%3, i%6)),
			Event: &model.Event{Level: level, Name: fmt.Sprint("e", i), Payload: []byte(fmt.Sprintf(`{"i":%d}`, i))}})
	}
	apply(model.Mutation{Op: model.OpPut, Path: "/gone", Type: "device"})
	apply(model.Mutation{Op: model.OpEvent, Path: "/gone", Event: &model.Event{Level: model.LevelInfo}})
	apply(model.Mutation{Op: model.OpDelete, Path: "/gone"})
	for _, r := range []struct{ kind, key, value string }{
		{"user", "alice", "a"}, {"user", "bob", "b"}, {"token", "x1", "tok"}, {"token", "x2", ""},
		{"job", "j1", "queued"}, {"user", "carol", "c"},
	} {
		if err := m.PutRecord(ctx, r.kind, r.key, []byte(r.value)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.DeleteRecord(ctx, "user", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.(interface{ CompactLog(uint64) (int, error) }).CompactLog(50); err != nil {
		t.Fatal(err)
	}
}

var recordKinds = []string{"user", "token", "job", "nothing"}

// sameStores holds b to a's answers on every read of model.Store.
func sameStores(t *testing.T, a, b model.Store) {
	t.Helper()
	same := func(what string, x, y any) {
		t.Helper()
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("%s differs:\n badger:   %+v\n postgres: %+v", what, x, y)
		}
	}
	la, err := a.LastSeq()
	if err != nil {
		t.Fatal(err)
	}
	lb, err := b.LastSeq()
	same("LastSeq", la, lb)
	if err != nil {
		t.Fatal(err)
	}

	snap := func(s model.Store) ([]*model.Context, uint64) {
		var out []*model.Context
		seq, err := s.Snapshot("/", func(c *model.Context) error { out = append(out, c); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return out, seq
	}
	ca, sa := snap(a)
	cb, sb := snap(b)
	same("Snapshot seq", sa, sb)
	same("Snapshot", ca, cb)
	if len(ca) < 30 {
		t.Fatalf("snapshot of %d contexts", len(ca))
	}
	for _, c := range ca {
		xa, erra := a.Context(c.Path)
		xb, errb := b.Context(c.Path)
		same("Context "+string(c.Path), []any{xa, erra}, []any{xb, errb})
		cha, erra := a.Children(c.Path, "", 0)
		chb, errb := b.Children(c.Path, "", 0)
		same("Children of "+string(c.Path), []any{cha, erra}, []any{chb, errb})
		for _, q := range []model.EventQuery{{}, {Level: model.LevelWarning}, {Limit: 2}} {
			ea, erra := a.Events(c.Path, q)
			eb, errb := b.Events(c.Path, q)
			same(fmt.Sprintf("Events of %s %+v", c.Path, q), []any{ea, erra}, []any{eb, errb})
		}
	}
	for _, p := range []model.Path{"/gone", "/nothing"} {
		_, erra := a.Context(p)
		_, errb := b.Context(p)
		if !errors.Is(erra, model.ErrNotFound) || !errors.Is(errb, model.ErrNotFound) {
			t.Fatalf("Context %s: %v, %v", p, erra, errb)
		}
		ea, _ := a.Events(p, model.EventQuery{})
		eb, _ := b.Events(p, model.EventQuery{})
		if len(ea)+len(eb) != 0 {
			t.Fatalf("events of %s: %d, %d", p, len(ea), len(eb))
		}
	}

	records := func(s model.Store, kind string) map[string]string {
		out := map[string]string{}
		if err := s.Records(kind, func(k string, v []byte) error { out[k] = string(v); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, kind := range recordKinds {
		same("Records "+kind, records(a, kind), records(b, kind))
	}
	va, erra := a.Record("token", "x2")
	vb, errb := b.Record("token", "x2")
	if erra != nil || errb != nil || len(va) != 0 || len(vb) != 0 {
		t.Fatalf("empty record: %q %v, %q %v", va, erra, vb, errb)
	}

	_, erra = a.ReadLog(0, 10)
	_, errb = b.ReadLog(0, 10)
	if !errors.Is(erra, model.ErrCompacted) || !errors.Is(errb, model.ErrCompacted) {
		t.Fatalf("ReadLog(0) after compaction: %v, %v", erra, errb)
	}
	first := la - 49
	loga, erra := a.ReadLog(first-1, 1000)
	logb, errb := b.ReadLog(first-1, 1000)
	same("ReadLog", []any{loga, erra}, []any{logb, errb})
	if len(loga) != 50 || loga[len(loga)-1].Seq != la {
		t.Fatalf("log of %d entries", len(loga))
	}
}

func TestCopyToPostgres(t *testing.T) {
	src := openTestBadger(t, t.TempDir(), nil)
	defer src.Close()
	fillStore(t, src)

	dsn := pgtest.Shared(t).NewDatabase(t)
	dst := openTestPostgres(t, dsn)
	st, err := CopyToPostgres(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	last, _ := src.LastSeq()
	if st.Contexts != 35 || st.Events != 40 || st.Entries != 50 || st.Records != 5 || st.LastSeq != last || st.FirstSeq != last-49 {
		t.Fatalf("stats = %+v (last %d)", st, last)
	}
	// Every column is filled in: nothing is left for the next open.
	var nulls int
	if err := dst.Pool().QueryRow(context.Background(), `SELECT count(*) FROM contexts WHERE vars IS NULL`).Scan(&nulls); err != nil || nulls != 0 {
		t.Fatalf("%d contexts without vars, %v", nulls, err)
	}
	// The one copying can wait on the log at once.
	if seq, err := dst.WaitLog(context.Background(), 0); err != nil || seq != last {
		t.Fatalf("WaitLog = %d, %v", seq, err)
	}
	// Once only.
	if _, err := CopyToPostgres(context.Background(), src, dst); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("second copy: %v", err)
	}
	dst.Close()

	dst = openTestPostgres(t, dsn)
	defer dst.Close()
	sameStores(t, src, dst)

	// The node carries on numbering where it stopped.
	m := newModel(t, dst)
	putContext(t, m, "/sites/s0/new")
	es, err := dst.ReadLog(last, 10)
	if err != nil || len(es) == 0 || es[0].Seq != last+1 {
		t.Fatalf("log after the copy's last %d: %+v, %v", last, es, err)
	}
}

// TestCopyRefusesNonEmpty: a database with only a record, or only a
// moved sequence number, is not empty; the refused copy changes nothing.
func TestCopyRefusesNonEmpty(t *testing.T) {
	src := openTestBadger(t, t.TempDir(), nil)
	defer src.Close()
	fillStore(t, src)
	dst := openTestPostgres(t, pgtest.Shared(t).NewDatabase(t))
	defer dst.Close()
	if err := dst.Commit(&model.Batch{Records: []model.Record{{Kind: "user", Key: "x", Value: []byte("1")}}}); err != nil {
		t.Fatal(err)
	}
	_, err := CopyToPostgres(context.Background(), src, dst)
	if !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("copy into a database with a record: %v", err)
	}
	var n int
	if err := dst.Pool().QueryRow(context.Background(), `SELECT count(*) FROM contexts`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("refused copy left %d contexts, %v", n, err)
	}
}
