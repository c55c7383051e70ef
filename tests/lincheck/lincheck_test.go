package lincheck

import (
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// op builds a recorded operation at fixed times.
func op(client int, key string, write bool, v string, found bool, call, ret int64) porcupine.Operation {
	in := input{Key: key, Write: write}
	out := output{}
	if write {
		in.Value = v
	} else {
		out = output{Value: v, Found: found}
	}
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func check(t *testing.T, ops ...porcupine.Operation) error {
	t.Helper()
	r := NewRecorder()
	r.ops = ops
	return r.Check(10*time.Second, t.TempDir())
}

func TestLinearizable(t *testing.T) {
	if err := check(t,
		op(0, "/d/a.temp", false, "", false, 0, 1), // nothing written yet
		op(0, "/d/a.temp", true, "1", false, 2, 5),
		op(1, "/d/a.temp", false, "1", true, 3, 6), // concurrent with the write: may see it
		op(1, "/d/a.temp", false, "1", true, 7, 8),
		op(0, "/d/b.temp", true, "x", false, 2, 3), // another register
		op(2, "/d/b.temp", false, "x", true, 4, 4),
	); err != nil {
		t.Fatal(err)
	}
}

// TestStaleRead: a read that starts after a write returned must see it
// (or a later one).
func TestStaleRead(t *testing.T) {
	err := check(t,
		op(0, "/d/a.temp", true, "1", false, 0, 1),
		op(0, "/d/a.temp", true, "2", false, 2, 3),
		op(1, "/d/a.temp", false, "1", true, 4, 5), // stale: 2 was acknowledged before
	)
	if err == nil || !strings.Contains(err.Error(), "Illegal") {
		t.Fatalf("a stale read passed: %v", err)
	}
	if !strings.Contains(err.Error(), "linearizability.html") {
		t.Fatalf("no visualization written: %v", err)
	}
}

// TestLostWrite: an acknowledged write that a later read does not see
// (the register reads as never written) is a violation.
func TestLostWrite(t *testing.T) {
	if err := check(t,
		op(0, "/d/a.temp", true, "1", false, 0, 1),
		op(1, "/d/a.temp", false, "", false, 2, 3),
	); err == nil {
		t.Fatal("a lost acknowledged write passed")
	}
}

// TestUnknownWrite: a write whose answer was lost may have taken effect,
// at any time after its call, or not at all.
func TestUnknownWrite(t *testing.T) {
	r := NewRecorder()
	r.Write(0, "/d/a.temp", "1", func() error { return nil })
	r.Write(1, "/d/a.temp", "2", func() error { return errors.New("leader died") })
	r.Read(2, "/d/a.temp", func() (string, bool, error) { return "1", true, nil })
	r.Read(2, "/d/a.temp", func() (string, bool, error) { return "2", true, nil })
	r.Read(2, "/d/a.temp", func() (string, bool, error) { return "", false, errors.New("no quorum") }) // not recorded
	if r.Len() != 4 || r.ops[1].Return != math.MaxInt64 {
		t.Fatalf("recorded %+v", r.ops)
	}
	if err := r.Check(10*time.Second, ""); err != nil {
		t.Fatal(err)
	}
	// But once a read saw it, a later read cannot see the older value.
	r.Read(2, "/d/a.temp", func() (string, bool, error) { return "1", true, nil })
	if err := r.Check(10*time.Second, ""); err == nil {
		t.Fatal("reading 1 after 2 passed")
	}
}

// TestConcurrentRecording: many clients record at once; a sequentially
// consistent in-memory register gives a linearizable history.
func TestConcurrentRecording(t *testing.T) {
	r := NewRecorder()
	var (
		mu  sync.Mutex
		reg = map[string]string{}
		wg  sync.WaitGroup
	)
	for c := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := []string{"/d/a.temp", "/d/b.temp"}[i%2]
				if i%3 == 0 {
					r.Write(c, key, string(rune('a'+c))+string(rune('0'+i%10)), func() error {
						mu.Lock()
						defer mu.Unlock()
						reg[key] = string(rune('a'+c)) + string(rune('0'+i%10))
						return nil
					})
					continue
				}
				r.Read(c, key, func() (string, bool, error) {
					mu.Lock()
					defer mu.Unlock()
					v, ok := reg[key]
					return v, ok, nil
				})
			}
		})
	}
	wg.Wait()
	if err := r.Check(30*time.Second, t.TempDir()); err != nil {
		t.Fatal(err)
	}
}

// A write whose error wraps ErrNotApplied is left out: a later read of
// its value is a violation, and its error is returned.
func TestNotAppliedLeftOut(t *testing.T) {
	r := NewRecorder()
	refused := errors.Join(errors.New("dial: connection refused"), ErrNotApplied)
	if err := r.Write(0, "/d/a.temp", "1", func() error { return refused }); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("Write returned %v", err)
	}
	if r.Len() != 0 {
		t.Fatalf("%d operations recorded, want 0", r.Len())
	}
	r.Read(1, "/d/a.temp", func() (string, bool, error) { return "1", true, nil })
	if err := r.Check(10*time.Second, ""); err == nil {
		t.Fatal("a read of a write that was never applied passed")
	}
}

// Writes of unknown outcome that no read observed are left out of the
// check; one a read observed is kept (and may take effect late).
func TestUnobservedUnknownWritesLeftOut(t *testing.T) {
	ops := []porcupine.Operation{
		op(0, "/d/a.temp", true, "1", false, 0, 1),
		op(1, "/d/a.temp", true, "lost?", false, 2, math.MaxInt64),
		op(2, "/d/a.temp", true, "late", false, 2, math.MaxInt64),
		op(3, "/d/a.temp", false, "1", true, 3, 4),
		op(3, "/d/a.temp", false, "late", true, 5, 6),
	}
	kept := unobservedLeftOut(ops)
	if len(kept) != 4 {
		t.Fatalf("kept %d operations, want 4 (all but the unobserved write)", len(kept))
	}
	for _, o := range kept {
		if o.Input.(input).Value == "lost?" {
			t.Fatal("the unobserved write of unknown outcome was kept")
		}
	}
	if err := check(t, ops...); err != nil {
		t.Fatal(err)
	}
	// Many unobserved unknown writes are no burden to the checker.
	many := []porcupine.Operation{op(0, "/d/a.temp", true, "1", false, 0, 1)}
	for i := range 500 {
		many = append(many, op(1+i, "/d/a.temp", true, "u"+string(rune('a'+i%26))+string(rune('a'+i/26)), false, int64(2+i), math.MaxInt64))
	}
	many = append(many, op(999, "/d/a.temp", false, "1", true, 1000, 1001))
	if err := check(t, many...); err != nil {
		t.Fatal(err)
	}
}
