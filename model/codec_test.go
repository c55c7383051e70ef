package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
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

// TestFastCodecMatches holds the hand-written encoder of entries and
// contexts (codec_fast.go) to what the reflection-driven encoder writes:
// the same bytes where maps have at most one member (beyond that their
// order is Go's iteration order in both), the same value once decoded
// always.
func TestFastCodecMatches(t *testing.T) {
	// A field added to one of these types must be encoded by
	// codec_fast.go too: update it, then these counts.
	for typ, fields := range map[reflect.Type]int{
		reflect.TypeFor[Entry](): 3, reflect.TypeFor[Mutation](): 12, reflect.TypeFor[Variable](): 4,
		reflect.TypeFor[Event](): 7, reflect.TypeFor[Record](): 3, reflect.TypeFor[Function](): 4, reflect.TypeFor[Context](): 9,
	} {
		if typ.NumField() != fields {
			t.Fatalf("%s has %d fields, codec_fast.go encodes %d", typ, typ.NumField(), fields)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		small := i%2 == 0 // maps of at most one member: byte for byte
		e := randomEntry(r, small)
		checkFast(t, &e, small)
		c := randomContext(r, small)
		checkFast(t, c, small)
	}
}

func checkFast[T any](t *testing.T, v *T, exact bool) {
	t.Helper()
	fast, err := Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if exact && !bytes.Equal(fast, slow) {
		t.Fatalf("%+v:\nfast %x\nslow %x", *v, fast, slow)
	}
	var a, b T
	if err := Unmarshal(fast, &a); err != nil {
		t.Fatalf("decode fast %x: %v", fast, err)
	}
	if err := Unmarshal(slow, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("decoded differently:\nfast %+v\nslow %+v", a, b)
	}
}

func randomText(r *rand.Rand) string {
	switch r.IntN(4) {
	case 0:
		return ""
	case 1:
		return "x"
	case 2:
		return strings.Repeat("é", r.IntN(40)) // lengths across head sizes
	}
	if r.IntN(100) == 0 {
		return strings.Repeat("a", 65535+r.IntN(2))
	}
	return strings.Repeat("a", r.IntN(300))
}

func randomBytes(r *rand.Rand) []byte {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	return bytes.Repeat([]byte("7"), r.IntN(300))
}

func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(4) {
	case 0:
		return time.Time{}
	case 1:
		return time.Date(2026, 12, 7, 17, 0, 0, 0, time.UTC)
	case 2:
		return time.Date(1999, 1, 2, 3, 4, 5, r.IntN(1e9), time.FixedZone("x", 3600))
	}
	return time.Unix(r.Int64N(1<<35), r.Int64N(1e9)).UTC()
}

func randomUint(r *rand.Rand) uint64 {
	return []uint64{0, 1, 23, 24, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, r.Uint64()}[r.IntN(11)]
}

func randomMembers(r *rand.Rand, small bool) int {
	if small {
		return r.IntN(2)
	}
	return r.IntN(30)
}

func randomLabels(r *rand.Rand, small bool) map[string]string {
	if r.IntN(3) == 0 {
		return nil
	}
	m := map[string]string{}
	for range randomMembers(r, small) {
		m[randomText(r)+fmt.Sprint(r.IntN(100))] = randomText(r)
	}
	return m
}

func randomVariables(r *rand.Rand, small bool) map[string]Variable {
	if r.IntN(4) == 0 {
		return nil
	}
	m := map[string]Variable{}
	for range randomMembers(r, small) {
		m[randomText(r)+fmt.Sprint(r.IntN(100))] = Variable{Value: randomBytes(r), Type: ValueType(randomText(r)),
			Time: randomTime(r), Quality: Quality([]string{"", "bad", randomText(r)}[r.IntN(3)])}
	}
	return m
}

func randomFunctions(r *rand.Rand, small bool) []Function {
	if r.IntN(3) == 0 {
		return nil
	}
	fs := make([]Function, randomMembers(r, small)*r.IntN(3))
	for i := range fs {
		fs[i] = Function{Name: randomText(r), Description: randomText(r), Args: randomBytes(r), Result: randomBytes(r)}
	}
	return fs
}

func randomEntry(r *rand.Rand, small bool) Entry {
	m := Mutation{Op: Op(r.IntN(8)), Path: Path(randomText(r)), Type: randomText(r), Tenant: randomText(r),
		Labels: randomLabels(r, small), Variables: randomVariables(r, small), Functions: randomFunctions(r, small),
		SetFunctions: r.IntN(2) == 0, Actor: randomText(r), Replace: r.IntN(2) == 0}
	if r.IntN(3) == 0 {
		m.Event = &Event{Seq: randomUint(r), Path: Path(randomText(r)), Name: randomText(r), Level: Level(randomText(r)),
			Payload: randomBytes(r), Time: randomTime(r), Tenant: randomText(r)}
	}
	if r.IntN(3) == 0 {
		m.Record = &Record{Kind: randomText(r), Key: randomText(r), Value: randomBytes(r)}
	}
	return Entry{Seq: randomUint(r), Time: randomTime(r), Mutation: m}
}

func randomContext(r *rand.Rand, small bool) *Context {
	return &Context{Path: Path(randomText(r)), Type: randomText(r), Tenant: randomText(r), Labels: randomLabels(r, small),
		Variables: randomVariables(r, small), Functions: randomFunctions(r, small), Created: randomTime(r), Updated: randomTime(r),
		Version: randomUint(r)}
}

func BenchmarkMarshalEntry(b *testing.B) {
	at := time.Date(2026, 12, 7, 17, 0, 0, 123456789, time.UTC)
	vars := map[string]Variable{}
	for _, n := range []string{"seq", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"} {
		vars[n] = Variable{Value: json.RawMessage("12.5"), Type: TypeNumber, Time: at}
	}
	e := Entry{Seq: 1234567, Time: at, Mutation: Mutation{Op: OpPut, Path: "/devices/b0001", Tenant: "t1", Actor: "t1", Variables: vars}}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Marshal(&e)
		}
	})
	b.Run("reflect", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encMode.Marshal(&e)
		}
	})
}
