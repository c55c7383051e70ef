package model

import (
	"github.com/fxamacker/cbor/v2"
)

// The binary encoding of contexts, entries and events, in stores and on the
// federation wire: CBOR with integer keys. Decoding ignores unknown keys, so
// a newer writer can add fields that an older reader skips.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{
		Time:    cbor.TimeRFC3339Nano,
		TimeTag: cbor.EncTagNone,
		Sort:    cbor.SortNone,
	}.EncMode()
	if err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		MaxNestedLevels:  32,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal encodes v in the model's binary encoding. Entries and contexts,
// encoded on every write, take a hand-written path (codec_fast.go) that
// writes the same bytes several times faster.
func Marshal(v any) ([]byte, error) {
	switch x := v.(type) {
	case *Entry:
		return appendEntry(make([]byte, 0, 24+mutationSizeHint(&x.Mutation)), x), nil
	case *Context:
		return appendContext(make([]byte, 0, 64+contextSizeHint(x)), x), nil
	}
	return encMode.Marshal(v)
}

// Unmarshal decodes data produced by Marshal (or a newer version of it).
func Unmarshal(data []byte, v any) error { return decMode.Unmarshal(data, v) }

// UnmarshalFirst decodes the first item of a sequence of Marshal outputs
// (a CBOR sequence) into v and returns the rest.
func UnmarshalFirst(data []byte, v any) (rest []byte, err error) {
	return decMode.UnmarshalFirst(data, v)
}
