package jobs

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/strata-dm/strata/model"
)

func record(t testing.TB, state State) []byte {
	t.Helper()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b, err := json.Marshal(&Job{ID: "j1", Device: "d1", Function: "ping", State: state, Created: now, Updated: now,
		History: []Transition{{State: Queued, Time: now}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func changeArg(t testing.TB, c change) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Update moves a job only forward, never out of a final state, and
// refuses what does not fit the record as it stands.
func TestUpdate(t *testing.T) {
	states := []State{Queued, Delivered, Running, Succeeded, Failed, Expired, Cancelled}
	for _, from := range states {
		for _, to := range states {
			out, err := Update("j1", record(t, from), changeArg(t, change{To: to, At: time.Now()}))
			if Allowed(from, to) != (err == nil) {
				t.Errorf("%s → %s: %v", from, to, err)
				continue
			}
			if err != nil {
				if !errors.Is(err, model.ErrConflict) {
					t.Errorf("%s → %s refused with %v; want a conflict", from, to, err)
				}
				continue
			}
			var j Job
			if err := json.Unmarshal(out, &j); err != nil || j.State != to || len(j.History) != 2 || j.History[1].State != to {
				t.Errorf("%s → %s: %+v, %v", from, to, j, err)
			}
		}
	}
	for name, c := range map[string]struct {
		cur  []byte
		arg  change
		want error
	}{
		"change of a missing job": {nil, change{To: Succeeded}, model.ErrNotFound},
		"another device's answer": {record(t, Delivered), change{Device: "d2", To: Succeeded}, model.ErrNotFound},
		"note on a job not final": {record(t, Running), change{Note: Succeeded}, model.ErrConflict},
		"empty change":            {record(t, Running), change{}, model.ErrInvalid},
	} {
		if _, err := Update("j1", c.cur, changeArg(t, c.arg)); !errors.Is(err, c.want) {
			t.Errorf("%s: %v; want %v", name, err, c.want)
		}
	}
	out, err := Update("j1", record(t, Succeeded), changeArg(t, change{Device: "d1", Note: Failed, At: time.Now()}))
	var j Job
	if err == nil {
		err = json.Unmarshal(out, &j)
	}
	if err != nil || j.State != Succeeded || j.History[len(j.History)-1].Detail != "late answer ignored: job was succeeded" {
		t.Fatalf("late answer: %+v, %v", j, err)
	}
}

// FuzzUpdate: whatever the record and the change (a change arrives from
// another replica over the replicas' channel), Update does not panic, and
// what it returns is a job whose state the record's allowed.
func FuzzUpdate(f *testing.F) {
	f.Add(record(f, Queued), changeArg(f, change{To: Delivered}))
	f.Add(record(f, Succeeded), changeArg(f, change{To: Delivered}))
	f.Add(record(f, Failed), changeArg(f, change{Note: Succeeded, Device: "d1"}))
	f.Add([]byte(nil), changeArg(f, change{To: Running}))
	f.Add([]byte(`{"state":"running"`), []byte(`{"to":"succeeded","result":{"a":1}}`))
	f.Fuzz(func(t *testing.T, cur, arg []byte) {
		if len(cur) == 0 {
			cur = nil
		}
		out, err := Update("j1", cur, arg)
		if err != nil {
			return
		}
		var j Job
		if err := json.Unmarshal(out, &j); err != nil {
			t.Fatalf("output does not decode: %v", err)
		}
		if cur == nil {
			t.Fatal("a missing job was updated")
		}
		var old Job
		if json.Unmarshal(cur, &old) != nil {
			t.Fatal("a damaged record was updated")
		}
		if old.State != j.State && !Allowed(old.State, j.State) {
			t.Fatalf("%s → %s", old.State, j.State)
		}
	})
}
