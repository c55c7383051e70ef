package bulk

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
)

func TestParseTarget(t *testing.T) {
	tg, err := ParseTarget(apitypes.BulkTarget{Subtree: "/peers", Filter: map[string]string{
		"path": "/peers/eu", "type": "device", "var.os": "android", "var.n": "4", "label.site": "plant-7"}})
	if err != nil {
		t.Fatal(err)
	}
	want := Target{Prefix: "/peers/eu", Type: "device", Labels: map[string]string{"site": "plant-7"},
		Vars: map[string]json.RawMessage{"os": json.RawMessage(`"android"`), "n": json.RawMessage(`4`)}}
	if !reflect.DeepEqual(tg, want) {
		t.Fatalf("got %+v, want %+v", tg, want)
	}
	m, ok := tg.Map("/peers/eu")
	if !ok || m.Prefix != "/" {
		t.Fatalf("mapped to eu: %+v %v", m, ok)
	}
	if _, ok := tg.Map("/peers/us"); ok {
		t.Fatal("mapped to us")
	}
	m, ok = Target{Prefix: "/", Paths: []model.Path{"/devices/a", "/peers/eu/devices/b"}}.Map("/peers/eu")
	if !ok || !reflect.DeepEqual(m.Paths, []model.Path{"/devices/b"}) {
		t.Fatalf("paths mapped to eu: %+v", m)
	}
	for _, bad := range []apitypes.BulkTarget{
		{},
		{Paths: []string{}},
		{Subtree: "/a", Filter: map[string]string{"path": "/b"}},
		{Filter: map[string]string{"sort": "path"}},
		{Filter: map[string]string{"limit": "3"}},
		{Filter: map[string]string{"type": "folder"}},
		{Filter: map[string]string{"var.": "x"}},
		{Labels: map[string]string{"site": "a"}, Filter: map[string]string{"label.site": "b"}},
		{Labels: map[string]string{"": "a"}},
	} {
		if _, err := ParseTarget(bad); !errors.Is(err, model.ErrInvalid) && !errors.Is(err, model.ErrInvalidPath) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// FuzzParseTarget: any body either is refused as invalid or parses to a
// target whose wire form parses back to the same target, and maps to any
// mount without failing. Its "rollout", likewise, is refused as invalid
// or parses to a rollout that reads back the same, and whose waves'
// bounds over any number of devices rise to that number.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		`{"subtree":"/"}`,
		`{"paths":["/devices/a","/peers/eu/devices/b"]}`,
		`{"labels":{"site":"plant-7"}}`,
		`{"filter":{"path":"/peers/eu","type":"device","var.os":"android","label.site":"plant-7"}}`,
		`{"subtree":"/peers","filter":{"path":"/peers/eu/x","var.n":" 4 ","tenant":"acme"}}`,
		`{"filter":{"var.o":"{\"a\": [1, 2]}"}}`,
		`{"subtree":"/","rollout":{"waves":["5%","25%","70%"],"max_failures":"2%","min_finished":10}}`,
		`{"labels":{"a":"b"},"rollout":{"waves":[1,"50%"],"approval":true,"success_threshold":3,"rate":{"per_second":2,"factor":2,"every":5},"max_concurrency":4}}`,
		`{"subtree":"/","rollout":{"waves":["0.5%"],"rate":{"per_second":0.1,"max_per_second":7}}}`,
	} {
		f.Add([]byte(s), "/peers/eu")
	}
	f.Fuzz(func(t *testing.T, body []byte, mount string) {
		var withRollout struct {
			Rollout json.RawMessage `json:"rollout"`
		}
		if json.Unmarshal(body, &withRollout) == nil {
			fuzzRollout(t, withRollout.Rollout, len(body)+len(mount))
		}
		var in apitypes.BulkTarget
		if json.Unmarshal(body, &in) != nil {
			return
		}
		tg, err := ParseTarget(in)
		if err != nil {
			if !errors.Is(err, model.ErrInvalid) && !errors.Is(err, model.ErrInvalidPath) {
				t.Fatalf("error not invalid: %v", err)
			}
			return
		}
		again, err := ParseTarget(tg.Wire())
		if err != nil {
			t.Fatalf("the wire form of %+v does not parse: %v", tg, err)
		}
		if !reflect.DeepEqual(again, tg) {
			t.Fatalf("round trip: %+v, want %+v", again, tg)
		}
		if mp, err := model.ParsePath(mount); err == nil {
			if m, ok := tg.Map(mp); ok {
				if _, err := ParseTarget(m.Wire()); err != nil {
					t.Fatalf("mapped to %s: %+v does not parse: %v", mp, m, err)
				}
			}
		}
	})
}

func fuzzRollout(t *testing.T, raw json.RawMessage, n int) {
	r, err := ParseRollout(raw)
	if err != nil {
		if !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("rollout error not invalid: %v", err)
		}
		return
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseRollout(b)
	if err != nil {
		t.Fatalf("rollout %s as written does not parse: %v", b, err)
	}
	if !reflect.DeepEqual(again, r) {
		t.Fatalf("rollout round trip: %+v, want %+v", again, r)
	}
	for _, total := range []int{0, 1, n, 100003} {
		bs := r.Bounds(total)
		if len(bs) == 0 || bs[len(bs)-1] != total || (len(r.Waves) > 0 && len(bs) < len(r.Waves)) {
			t.Fatalf("bounds of %+v over %d: %v", r, total, bs)
		}
		for i := 1; i < len(bs); i++ {
			if bs[i] < bs[i-1] || bs[i-1] < 0 {
				t.Fatalf("bounds of %+v over %d fall: %v", r, total, bs)
			}
		}
	}
}
