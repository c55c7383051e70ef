package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
)

// Job arguments and results follow the tree's rule for JSON values
// (model.CheckValue), whichever path brings them (the API, a call over
// federation, a device's result): refused with model.ErrInvalidValue,
// nothing stored.
func TestArgsAndResultsFollowTheValueRule(t *testing.T) {
	m, closeStore := open(t, t.TempDir())
	defer closeStore()
	s, err := New(Config{Records: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	for _, args := range []string{`{"n": 1e999}`, `{"a": ` + deep + `}`, "{\"s\": \"\xff\"}", `{"s": "\udc00"}`} {
		if _, err := s.Create(ctx, Spec{Device: "d", Function: "f", Args: json.RawMessage(args)}); !errors.Is(err, model.ErrInvalidValue) {
			t.Errorf("args %.30q: %v", args, err)
		}
	}
	if n := len(s.Pending("d")); n != 0 {
		t.Fatalf("%d jobs stored from refused args", n)
	}
	j, err := s.Create(ctx, Spec{Device: "d", Function: "f", Args: json.RawMessage(`{"n": 1e300}`)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Report(ctx, "d", j.ID, Succeeded, json.RawMessage(`{"n": -1e999}`), ""); !errors.Is(err, model.ErrInvalidValue) {
		t.Fatalf("result out of range: %v", err)
	}
	if got, _ := s.Get(j.ID); got.State != Queued || got.Result != nil {
		t.Fatalf("after a refused result: %s %s", got.State, got.Result)
	}
}
