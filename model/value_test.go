package model_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/store"
)

func TestCheckValue(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	good := []string{`0`, `-0.5e-3`, `1e308`, `-1.7976931348623157e308`, `1e-999`, `"café \ud83d\ude00"`, `"\u00e9\n"`,
		` {"a": [1, {"b": null}], "c": true} `, deep(model.MaxValueDepth), `{"a":` + deep(model.MaxValueDepth-1) + `}`,
		"0." + strings.Repeat("0", 400) + "1", strings.Repeat("9", 300)}
	bad := []string{``, `1e999`, `-1E+309`, `[1, 2e400]`, `{"a": 1e999}`, strings.Repeat("9", 310), deep(model.MaxValueDepth + 1),
		`{"a":` + deep(model.MaxValueDepth) + `}`, deep(9998), "\"\xff\"", "{\"\xc3\": 1}", "\"\xed\xa0\x80\"",
		`"\ud800"`, `"\udfff"`, `"\ud800\u0041"`, `"\ud800x"`, `[1,]`, `1 2`, `{"a" 1}`, "\"a\x01\""}
	for _, v := range good {
		if err := model.CheckValue([]byte(v)); err != nil {
			t.Errorf("%.40q refused: %v", v, err)
		}
	}
	for _, v := range bad {
		err := model.CheckValue([]byte(v))
		if !errors.Is(err, model.ErrInvalidValue) || !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%.40q: %v, want ErrInvalidValue", v, err)
		}
	}
}

// Every way a value enters a mutation is checked by Validate, with an
// error naming where the value is.
func TestValidateChecksValues(t *testing.T) {
	bad := json.RawMessage(`[1e999]`)
	for _, c := range []struct {
		m    model.Mutation
		want string
	}{
		{model.Mutation{Op: model.OpPut, Path: "/a", Variables: map[string]model.Variable{"temp": {Value: bad}}}, `variable "temp"`},
		{model.Mutation{Op: model.OpEvent, Path: "/a", Event: &model.Event{Level: model.LevelInfo, Payload: bad}}, "event payload"},
		{model.Mutation{Op: model.OpPut, Path: "/a", Functions: []model.Function{{Name: "f", Args: bad}}}, `function "f": argument schema`},
		{model.Mutation{Op: model.OpPut, Path: "/a", Functions: []model.Function{{Name: "f", Result: bad}}}, `function "f": result schema`},
	} {
		err := c.m.Validate()
		if !errors.Is(err, model.ErrInvalidValue) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%+v: %v", c.m, err)
		}
	}
	if _, err := model.NewVariable(bad, time.Time{}); !errors.Is(err, model.ErrInvalidValue) {
		t.Errorf("NewVariable: %v", err)
	}
}

// Values stored before the rule (by an earlier version) stay readable:
// the store and the model open on them, reads return them, and other
// writes to the same context go on; only new bad values are refused.
func TestStoredBadValuesStillOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func() (*store.Badger, *model.Model) {
		s, err := store.OpenBadger(store.BadgerOptions{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		m, err := model.New(model.Config{Store: s})
		if err != nil {
			t.Fatal(err)
		}
		return s, m
	}
	s, m := open()
	deep := strings.Repeat("[", 500) + strings.Repeat("]", 500)
	_, err := model.ApplyUnchecked(ctx, m, model.Mutation{Op: model.OpPut, Path: "/devices/old", Type: "device",
		Variables: map[string]model.Variable{"big": {Value: json.RawMessage(`1e999`), Type: model.TypeNumber}, "deep": {Value: json.RawMessage(deep), Type: model.TypeArray}}},
		model.Mutation{Op: model.OpEvent, Path: "/devices/old", Event: &model.Event{Level: model.LevelInfo, Payload: json.RawMessage("\"\xff\"")}})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	s.Close()

	s, m = open()
	defer s.Close()
	defer m.Close()
	c, err := m.Get("/devices/old")
	if err != nil || string(c.Variables["big"].Value) != `1e999` || string(c.Variables["deep"].Value) != deep {
		t.Fatalf("old values after a restart: %v %v", c, err)
	}
	if evs, err := m.Events("/devices/old", model.EventQuery{}); err != nil || len(evs) != 1 {
		t.Fatalf("old event: %v %v", evs, err)
	}
	v, _ := model.NewVariable(json.RawMessage(`2`), time.Time{})
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/old", Variables: map[string]model.Variable{"other": v}}); err != nil {
		t.Fatalf("a good write beside old bad values: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/old", Variables: map[string]model.Variable{"big": v}}); err != nil {
		t.Fatalf("replacing an old bad value: %v", err)
	}
	if _, err := m.Apply(ctx, model.Mutation{Op: model.OpPut, Path: "/devices/old",
		Variables: map[string]model.Variable{"deep": {Value: json.RawMessage(deep)}}}); !errors.Is(err, model.ErrInvalidValue) {
		t.Fatalf("a new bad value: %v", err)
	}
}

// FuzzCheckValue holds CheckValue to an independent reading of the rule:
// what it accepts, encoding/json decodes, with valid UTF-8, finite
// numbers and bounded depth; what it refuses without escapes in strings,
// that reading refuses too.
func FuzzCheckValue(f *testing.F) {
	for _, s := range []string{`1`, `1e999`, `"a"`, "\"\xff\"", `"\ud800"`, `"\ud83d\ude00"`, `{"a":[1,2,{"b":null}]}`,
		strings.Repeat("[", 65) + strings.Repeat("]", 65), `-0.0e-5`, ` true `, `[1,]`,
		`12.5`, `-0`, `01`, `1.`, `-`, `"plain é"`, "\"a\x01\"", `"a"b"`, `truex`, strings.Repeat("9", 301)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := model.CheckValue(data)
		if err != nil && !errors.Is(err, model.ErrInvalidValue) {
			t.Fatalf("error %v does not wrap ErrInvalidValue", err)
		}
		refErr := reference(data)
		if err == nil && refErr != nil {
			t.Fatalf("accepted %q: %v", data, refErr)
		}
		if err != nil && refErr == nil && !bytes.Contains(data, []byte(`\u`)) {
			t.Fatalf("refused %q (%v), which holds to the rule", data, err)
		}
	})
}

// reference checks the rule the slow way: decode, then walk.
func reference(data []byte) error {
	if !utf8.Valid(data) {
		return errors.New("not UTF-8")
	}
	if !json.Valid(data) {
		return errors.New("not JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	var walk func(v any, depth int) error
	walk = func(v any, depth int) error {
		switch x := v.(type) {
		case json.Number:
			f, err := strconv.ParseFloat(string(x), 64)
			if err != nil && !errors.Is(err, strconv.ErrRange) || math.IsInf(f, 0) {
				return errors.New("number out of range")
			}
		case []any:
			if depth+1 > model.MaxValueDepth {
				return errors.New("too deep")
			}
			for _, e := range x {
				if err := walk(e, depth+1); err != nil {
					return err
				}
			}
		case map[string]any:
			if depth+1 > model.MaxValueDepth {
				return errors.New("too deep")
			}
			for _, e := range x {
				if err := walk(e, depth+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(v, 0)
}
