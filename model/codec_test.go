package model

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func TestEntryRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 123456789, time.UTC)
	e := Entry{Seq: 42, Time: at, Mutation: Mutation{Op: OpPut, Path: "/devices/a", Type: "device", Tenant: "acme",
		Labels:    map[string]string{"site": "north"},
		Variables: map[string]Variable{"temp": {Value: json.RawMessage("21.5"), Type: TypeNumber, Time: at, Quality: QualityGood}}}}
	b, err := Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	var got Entry
	if err := Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, e)
	}
}

// A decoder of a newer encoding ignores fields it does not know.
func TestUnknownFieldsIgnored(t *testing.T) {
	type future struct {
		Seq   uint64 `cbor:"1,keyasint"`
		Extra string `cbor:"99,keyasint"`
	}
	b, err := Marshal(future{Seq: 7, Extra: "new"})
	if err != nil {
		t.Fatal(err)
	}
	var e Entry
	if err := Unmarshal(b, &e); err != nil || e.Seq != 7 {
		t.Fatalf("decode: %+v, %v", e, err)
	}
}

func FuzzUnmarshalEntry(f *testing.F) {
	e := Entry{Seq: 1, Mutation: Mutation{Op: OpEvent, Path: "/a", Event: &Event{Level: LevelAlert, Payload: json.RawMessage(`{"x":1}`)}}}
	b, _ := Marshal(&e)
	f.Add(b)
	f.Add([]byte{0xa1, 0x01, 0x18, 0x2a})
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Entry
		if err := Unmarshal(data, &e); err != nil {
			return
		}
		// Whatever decodes must encode again.
		if _, err := Marshal(&e); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
