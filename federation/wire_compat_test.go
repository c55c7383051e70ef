package federation

import (
	"encoding/json"
	"testing"

	"github.com/strata-dm/strata/model"
)

// A job read answered by a tier of another version still decodes: keys
// this tier does not know are ignored, the whole job passes through
// untouched, and an older owner's answer (no job document) keeps its
// summary.
func TestJobResultAcrossVersions(t *testing.T) {
	doc := json.RawMessage(`{"id":"j1","path":"/devices/d1","function":"reboot","added_later":{"x":1}}`)
	newer := struct {
		response
		Extra string `cbor:"99,keyasint"`
	}{response{Result: &CallResult{Job: "j1", State: "failed", Path: "/devices/d1", JobJSON: doc}}, "from the future"}
	b, err := model.Marshal(newer)
	if err != nil {
		t.Fatal(err)
	}
	var got response
	if err := decode(kindResponse, b, &got); err != nil {
		t.Fatalf("a newer tier's answer: %v", err)
	}
	if got.Result == nil || got.Result.Job != "j1" || string(got.Result.JobJSON) != string(doc) {
		t.Fatalf("decoded %+v", got.Result)
	}

	type oldResult struct { // CallResult before the job document
		Job   string     `cbor:"1,keyasint,omitempty"`
		State string     `cbor:"2,keyasint"`
		Path  model.Path `cbor:"6,keyasint,omitempty"`
	}
	b, err = model.Marshal(struct {
		Result *oldResult `cbor:"3,keyasint,omitempty"`
	}{&oldResult{Job: "j1", State: "queued", Path: "/devices/d1"}})
	if err != nil {
		t.Fatal(err)
	}
	got = response{}
	if err := decode(kindResponse, b, &got); err != nil || got.Result == nil || got.Result.State != "queued" || got.Result.JobJSON != nil {
		t.Fatalf("an older tier's answer: %+v %v", got.Result, err)
	}
	// And an older tier decodes the newer answer, ignoring the document.
	b, _ = model.Marshal(response{Result: &CallResult{Job: "j1", State: "failed", JobJSON: doc}})
	var old struct {
		Result *oldResult `cbor:"3,keyasint,omitempty"`
	}
	if err := decode(kindResponse, b, &old); err != nil || old.Result == nil || old.Result.State != "failed" {
		t.Fatalf("an older tier reading a newer answer: %+v %v", old.Result, err)
	}
}
