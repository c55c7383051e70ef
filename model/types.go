package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Limits on the content of a context. Like the path limits they bound what
// one mutation can cost a store or the federation wire.
const (
	MaxVariables   = 1024      // variables on one context
	MaxLabels      = 64        // labels on one context
	MaxLabelLen    = 256       // bytes of a label key or value
	MaxValueBytes  = 64 << 10  // bytes of one encoded variable value
	MaxPayloadSize = 256 << 10 // bytes of one event payload
	MaxFunctions   = 128
	MaxTypeLen     = 64
	MaxTenantLen   = 64
)

// ValueType names the JSON type of a variable's value.
type ValueType string

// Value types; derived from the value itself, never trusted from input.
const (
	TypeNull   ValueType = "null"
	TypeBool   ValueType = "bool"
	TypeNumber ValueType = "number"
	TypeString ValueType = "string"
	TypeObject ValueType = "object"
	TypeArray  ValueType = "array"
)

// Quality says how far a variable's value can be trusted, in the OPC sense.
type Quality string

// Qualities. The empty quality reads as QualityGood.
const (
	QualityGood      Quality = "good"
	QualityUncertain Quality = "uncertain"
	QualityBad       Quality = "bad"
)

// Level is the severity of an event.
type Level string

// Event levels.
const (
	LevelInfo    Level = "info"
	LevelWarning Level = "warning"
	LevelAlert   Level = "alert"
)

// Variable is a named, typed, timestamped value of a context.
type Variable struct {
	Value   json.RawMessage `cbor:"1,keyasint" json:"value"`
	Type    ValueType       `cbor:"2,keyasint" json:"type"`
	Time    time.Time       `cbor:"3,keyasint" json:"time"`
	Quality Quality         `cbor:"4,keyasint,omitempty" json:"quality,omitempty"`
}

// NewVariable builds a variable from a JSON value, deriving its type. The
// value is compacted so that equal values are equal bytes.
func NewVariable(raw json.RawMessage, at time.Time) (Variable, error) {
	typ, val, err := classify(raw)
	if err != nil {
		return Variable{}, err
	}
	return Variable{Value: val, Type: typ, Time: at.UTC()}, nil
}

func classify(raw json.RawMessage) (ValueType, json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", nil, fmt.Errorf("%w: empty value", ErrInvalid)
	}
	if len(raw) > MaxValueBytes {
		return "", nil, fmt.Errorf("%w: value larger than %d bytes", ErrInvalid, MaxValueBytes)
	}
	if err := CheckValue(raw); err != nil {
		return "", nil, err
	}
	var typ ValueType
	switch raw[0] {
	case 'n':
		typ = TypeNull
	case 't', 'f':
		typ = TypeBool
	case '"':
		typ = TypeString
	case '{':
		typ = TypeObject
	case '[':
		typ = TypeArray
	default:
		typ = TypeNumber
	}
	if typ == TypeObject || typ == TypeArray {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return "", nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		raw = buf.Bytes()
	} else {
		raw = append(json.RawMessage(nil), raw...)
	}
	return typ, raw, nil
}

// Function is an operation a context offers.
type Function struct {
	Name        string          `cbor:"1,keyasint" json:"name"`
	Description string          `cbor:"2,keyasint,omitempty" json:"description,omitempty"`
	Args        json.RawMessage `cbor:"3,keyasint,omitempty" json:"args,omitempty"`   // JSON Schema of the arguments
	Result      json.RawMessage `cbor:"4,keyasint,omitempty" json:"result,omitempty"` // JSON Schema of the result
}

// Event is a timestamped occurrence on a context. Seq is the change-log
// sequence number of the mutation that recorded it, which makes it unique
// and ordered within a node.
type Event struct {
	Seq     uint64          `cbor:"1,keyasint" json:"seq"`
	Path    Path            `cbor:"2,keyasint" json:"path"`
	Name    string          `cbor:"3,keyasint,omitempty" json:"name,omitempty"`
	Level   Level           `cbor:"4,keyasint" json:"level"`
	Payload json.RawMessage `cbor:"5,keyasint,omitempty" json:"payload,omitempty"`
	Time    time.Time       `cbor:"6,keyasint" json:"time"`
	Tenant  string          `cbor:"7,keyasint,omitempty" json:"tenant,omitempty"`
}

// Context is one node of the tree with all its state. Version is the
// sequence number of the last mutation that changed it.
type Context struct {
	Path      Path                `cbor:"1,keyasint" json:"path"`
	Type      string              `cbor:"2,keyasint" json:"type"`
	Tenant    string              `cbor:"3,keyasint,omitempty" json:"tenant"`
	Labels    map[string]string   `cbor:"4,keyasint,omitempty" json:"labels,omitempty"`
	Variables map[string]Variable `cbor:"5,keyasint,omitempty" json:"variables,omitempty"`
	Functions []Function          `cbor:"6,keyasint,omitempty" json:"functions,omitempty"`
	Created   time.Time           `cbor:"7,keyasint" json:"created"`
	Updated   time.Time           `cbor:"8,keyasint" json:"updated"`
	Version   uint64              `cbor:"9,keyasint" json:"version"`
}

// Clone returns a deep enough copy to mutate maps and slices without
// touching c. Values (json.RawMessage) are immutable by convention.
func (c *Context) Clone() *Context {
	n := *c
	n.Labels = maps.Clone(c.Labels)
	n.Variables = maps.Clone(c.Variables)
	n.Functions = slices.Clone(c.Functions)
	return &n
}

// Child is the summary of a context held in its parent's child index: enough
// to browse and to filter by tenant without loading the context.
type Child struct {
	Name   string `cbor:"1,keyasint" json:"name"`
	Type   string `cbor:"2,keyasint" json:"type"`
	Tenant string `cbor:"3,keyasint,omitempty" json:"tenant"`
}

// Record is a node-local datum (a user, a token, a job...) kept beside the
// tree. Records go through the same log and state machine as contexts, so a
// replicated log carries them too, but they have no path and are never
// published to consumers.
type Record struct {
	Kind  string `cbor:"1,keyasint"`
	Key   string `cbor:"2,keyasint"`
	Value []byte `cbor:"3,keyasint,omitempty"`
}
