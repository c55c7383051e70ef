package api

import (
	"errors"
	"strings"
	"testing"

	"github.com/strata-dm/strata/model"
)

// badValues are JSON values the tree refuses from any writer: a number
// out of float64's range, nesting past maxDepth, invalid
// UTF-8 in a string, an unpaired surrogate.
const maxDepth = 64 // model.MaxValueDepth

var badValues = map[string]string{
	"overflow":          `1e999`,
	"negative overflow": `[-1e400]`,
	"deep":              strings.Repeat("[", 9998) + strings.Repeat("]", 9998),
	"one too deep":      strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
	"invalid utf-8":     "\"caf\xe9\"",
	"invalid utf-8 key": "{\"\xff\": 1}",
	"lone surrogate":    `"\ud800"`,
}

// A PUT whose variables hold a value outside the rule answers 400 and
// stores nothing (the context is not even created); the same PUT with a
// good value, at the depth limit, is stored. Events and function calls
// carrying such a value are refused the same way.
func TestPutRefusesBadValues(t *testing.T) {
	e := newEnv(t)
	for name, v := range badValues {
		t.Log(name)
		{
			body := `{"type": "device", "variables": {"ok": 1, "x": ` + v + `}}`
			r := e.do("PUT", "/api/v1/contexts/devices/v1", e.admin, body)
			e.want(r, 400, codeInvalid)
			if !strings.Contains(string(r.body), `variable \"x\"`) {
				t.Errorf("%s: error does not name the variable: %s", name, r.body)
			}
			if _, err := e.model.Get("/devices/v1"); !errors.Is(err, model.ErrNotFound) {
				t.Fatalf("%s: refused PUT stored something: %v", name, err)
			}
			r = e.do("POST", "/api/v1/events/devices", e.admin, `{"name": "e", "level": "info", "payload": `+v+`}`)
			e.want(r, 400, codeInvalid)
		}
	}
	if evs, _ := e.model.Events("/devices", model.EventQuery{}); len(evs) != 0 {
		t.Fatalf("refused events stored: %v", evs)
	}
	deepest := strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth)
	e.want(e.do("PUT", "/api/v1/contexts/devices/v1", e.admin,
		`{"type": "device", "variables": {"x": `+deepest+`, "y": 1e308, "z": "\ud83d\ude00 café"}}`), 201, "")
	c, err := e.model.Get("/devices/v1")
	if err != nil || string(c.Variables["x"].Value) != deepest {
		t.Fatalf("good values: %v %v", c, err)
	}
}
