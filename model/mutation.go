package model

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Callers branch on them with errors.Is; the API maps them
// to HTTP statuses in one place.
var (
	ErrNotFound  = errors.New("not found")
	ErrInvalid   = errors.New("invalid")
	ErrConflict  = errors.New("conflict")
	ErrCompacted = errors.New("log compacted past cursor")
	ErrClosed    = errors.New("model closed")
	// ErrShared refuses a tenant's change to a shared (tenant-less) context.
	ErrShared = errors.New("shared context")
	// ErrNotLeader refuses a write on a replica of a cluster that cannot
	// commit it now (it is not the leader, or no leader is known): the
	// write did not happen; try again (node/cluster).
	ErrNotLeader = errors.New("not the leader")
)

// Op is the kind of a mutation.
type Op uint8

// Mutation kinds. Values are stored and sent on the wire: never renumber.
const (
	OpPut          Op = 1 // create or update a context
	OpDelete       Op = 2 // delete a context without children
	OpEvent        Op = 3 // append an event to a context
	OpPutRecord    Op = 4 // put a node-local record
	OpDeleteRecord Op = 5 // delete a node-local record
	// OpUpdateRecord changes a node-local record through the updater of
	// its kind (Model.RegisterUpdater), decided against the record as the
	// state machine has it; Record.Value is the updater's argument. It is
	// logged as the OpPutRecord of the value the updater returned, so it
	// is only ever proposed, never found in the log.
	OpUpdateRecord Op = 6
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpEvent:
		return "event"
	case OpPutRecord:
		return "put-record"
	case OpDeleteRecord:
		return "delete-record"
	case OpUpdateRecord:
		return "update-record"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Mutation is one change to a node's state. Mutations are the only way to
// change the tree: the state machine applies them in log order, so the same
// log applied to the same state always gives the same result (which is what
// lets a replicated log sit in front of it).
//
// OpPut creates the context if missing (with its missing ancestors as
// "folder" contexts of no tenant), sets Type and Tenant when non-empty,
// merges Labels (an empty value removes a label), merges Variables, and
// replaces Functions when SetFunctions is true.
type Mutation struct {
	Op           Op                  `cbor:"1,keyasint" json:"op"`
	Path         Path                `cbor:"2,keyasint,omitempty" json:"path,omitempty"`
	Type         string              `cbor:"3,keyasint,omitempty" json:"type,omitempty"`
	Tenant       string              `cbor:"4,keyasint,omitempty" json:"tenant,omitempty"`
	Labels       map[string]string   `cbor:"5,keyasint,omitempty" json:"labels,omitempty"`
	Variables    map[string]Variable `cbor:"6,keyasint,omitempty" json:"variables,omitempty"`
	Functions    []Function          `cbor:"7,keyasint,omitempty" json:"functions,omitempty"`
	SetFunctions bool                `cbor:"8,keyasint,omitempty" json:"set_functions,omitempty"`
	Event        *Event              `cbor:"9,keyasint,omitempty" json:"event,omitempty"`
	Record       *Record             `cbor:"10,keyasint,omitempty" json:"-"`
	// Actor, when set, is the tenant on whose behalf the mutation is made.
	// The state machine then refuses it, as if the context did not exist
	// (ErrNotFound), when the context or any existing ancestor belongs to
	// another tenant, and with ErrShared when it would change a shared
	// (tenant-less) context. A put that creates the context gives it the
	// actor's tenant. System writers leave Actor empty.
	Actor string `cbor:"11,keyasint,omitempty" json:"actor,omitempty"`
	// Replace makes an OpPut set the context's whole state instead of
	// merging: Type, Tenant (even empty), Labels, Variables and Functions
	// become exactly the mutation's. Mirrors use it to apply snapshots.
	Replace bool `cbor:"12,keyasint,omitempty" json:"replace,omitempty"`
}

// Entry is one change-log entry: a mutation as applied, with the sequence
// number and time the state machine gave it.
type Entry struct {
	Seq      uint64    `cbor:"1,keyasint" json:"seq"`
	Time     time.Time `cbor:"2,keyasint" json:"time"`
	Mutation Mutation  `cbor:"3,keyasint" json:"mutation"`
}

// Local reports whether the entry concerns node-local records, which are
// never published to consumers.
func (e *Entry) Local() bool {
	return e.Mutation.Op == OpPutRecord || e.Mutation.Op == OpDeleteRecord
}

// Validate checks a mutation before it is proposed. It does not look at
// state; the state machine checks what depends on state.
func (m *Mutation) Validate() error {
	switch m.Op {
	case OpPut, OpDelete, OpEvent:
		if _, err := ParsePath(string(m.Path)); err != nil {
			return err
		}
		if m.Path.IsRoot() {
			return fmt.Errorf("%w: the root cannot be changed", ErrInvalid)
		}
	case OpPutRecord, OpDeleteRecord, OpUpdateRecord:
		if m.Record == nil || m.Record.Kind == "" || m.Record.Key == "" {
			return fmt.Errorf("%w: record needs a kind and a key", ErrInvalid)
		}
		if len(m.Record.Kind)+len(m.Record.Key) > MaxPathLen {
			return fmt.Errorf("%w: record key too long", ErrInvalid)
		}
		return nil
	default:
		return fmt.Errorf("%w: unknown mutation op %d", ErrInvalid, m.Op)
	}
	if err := checkText("type", m.Type, MaxTypeLen); err != nil {
		return err
	}
	if err := checkText("tenant", m.Tenant, MaxTenantLen); err != nil {
		return err
	}
	if err := checkText("actor", m.Actor, MaxTenantLen); err != nil {
		return err
	}
	if m.Replace && (m.Op != OpPut || m.Actor != "") {
		return fmt.Errorf("%w: replace is for system puts only", ErrInvalid)
	}
	if m.Actor != "" && m.Tenant != "" && m.Tenant != m.Actor {
		return fmt.Errorf("%w: a tenant cannot write into another tenant", ErrInvalid)
	}
	if len(m.Labels) > MaxLabels {
		return fmt.Errorf("%w: more than %d labels", ErrInvalid, MaxLabels)
	}
	for k, v := range m.Labels {
		if k == "" {
			return fmt.Errorf("%w: empty label key", ErrInvalid)
		}
		if err := checkText("label key", k, MaxLabelLen); err != nil {
			return err
		}
		if err := checkText("label value", v, MaxLabelLen); err != nil {
			return err
		}
	}
	if len(m.Variables) > MaxVariables {
		return fmt.Errorf("%w: more than %d variables", ErrInvalid, MaxVariables)
	}
	for name, v := range m.Variables {
		if err := ValidateName(name); err != nil {
			return fmt.Errorf("%w: variable name: %v", ErrInvalid, err)
		}
		if len(v.Value) == 0 || len(v.Value) > MaxValueBytes {
			return fmt.Errorf("%w: variable %q: value must be 1..%d bytes", ErrInvalid, name, MaxValueBytes)
		}
		if err := CheckValue(v.Value); err != nil {
			return fmt.Errorf("variable %q: %w", name, err)
		}
		switch v.Quality {
		case "", QualityGood, QualityUncertain, QualityBad:
		default:
			return fmt.Errorf("%w: variable %q: unknown quality %q", ErrInvalid, name, v.Quality)
		}
	}
	if len(m.Functions) > MaxFunctions {
		return fmt.Errorf("%w: more than %d functions", ErrInvalid, MaxFunctions)
	}
	for _, f := range m.Functions {
		if err := ValidateName(f.Name); err != nil {
			return fmt.Errorf("%w: function name: %v", ErrInvalid, err)
		}
		if len(f.Args) > 0 {
			if err := CheckValue(f.Args); err != nil {
				return fmt.Errorf("function %q: argument schema: %w", f.Name, err)
			}
		}
		if len(f.Result) > 0 {
			if err := CheckValue(f.Result); err != nil {
				return fmt.Errorf("function %q: result schema: %w", f.Name, err)
			}
		}
	}
	if m.Op == OpEvent {
		if m.Event == nil {
			return fmt.Errorf("%w: event mutation without event", ErrInvalid)
		}
		switch m.Event.Level {
		case LevelInfo, LevelWarning, LevelAlert:
		default:
			return fmt.Errorf("%w: unknown event level %q", ErrInvalid, m.Event.Level)
		}
		if len(m.Event.Payload) > MaxPayloadSize {
			return fmt.Errorf("%w: event payload larger than %d bytes", ErrInvalid, MaxPayloadSize)
		}
		if len(m.Event.Payload) > 0 {
			if err := CheckValue(m.Event.Payload); err != nil {
				return fmt.Errorf("event payload: %w", err)
			}
		}
		if err := checkText("event name", m.Event.Name, MaxNameLen); err != nil {
			return err
		}
	}
	return nil
}

func checkText(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, what)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: control character in %s", ErrInvalid, what)
		}
	}
	return nil
}
