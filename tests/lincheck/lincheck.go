// Package lincheck records a history of reads and writes of registers
// (a context's variable, named by path and variable) made by concurrent
// clients against a system under test, and checks that the history is
// linearizable with github.com/anishathalye/porcupine: that some order of
// the operations, each taking effect at one instant between its call and
// its return, explains every value read.
//
// A write whose outcome is unknown (it failed, timed out, or its answer
// was lost when a replica died) may have taken effect or not: it is
// recorded as still pending at the end of the history, so the checker may
// place it at any instant after its call, or never observe it. A failed
// read is left out: it observed nothing.
package lincheck

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Recorder collects a history. Its methods are safe for concurrent use.
type Recorder struct {
	start time.Time

	mu  sync.Mutex
	ops []porcupine.Operation // guarded by mu
}

// NewRecorder starts a history.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// input is one operation's request.
type input struct {
	Key   string
	Write bool
	Value string // written
}

// output is one operation's answer: the value read ("" and !Found when
// the register was never written).
type output struct {
	Value string
	Found bool
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// ErrNotApplied marks a write that certainly did not take effect (its
// request never left the client: the connection was refused). Write
// leaves a write whose error wraps it out of the history.
var ErrNotApplied = errors.New("lincheck: not applied")

// Write records client writing value to key through do. An error from do
// means the outcome is unknown (see the package doc), unless it wraps
// ErrNotApplied; Write returns it.
func (r *Recorder) Write(client int, key, value string, do func() error) error {
	call := r.now()
	err := do()
	ret := r.now()
	if errors.Is(err, ErrNotApplied) {
		return err
	}
	if err != nil {
		ret = math.MaxInt64 // may take effect at any time after its call
	}
	r.add(porcupine.Operation{ClientId: client, Input: input{Key: key, Write: true, Value: value},
		Call: call, Output: output{}, Return: ret})
	return err
}

// Read records client reading key through do, which returns the value
// and whether the register holds one. A read that fails is not recorded.
func (r *Recorder) Read(client int, key string, do func() (value string, found bool, err error)) (string, bool, error) {
	call := r.now()
	v, found, err := do()
	ret := r.now()
	if err == nil {
		r.add(porcupine.Operation{ClientId: client, Input: input{Key: key},
			Call: call, Output: output{Value: v, Found: found}, Return: ret})
	}
	return v, found, err
}

func (r *Recorder) add(op porcupine.Operation) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// Len is the number of operations recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// registers is the sequential specification: one register per key,
// partitioned by key so that each is checked on its own.
var registers = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(input).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return output{} },
	Step: func(state, in, out any) (bool, any) {
		st, i, o := state.(output), in.(input), out.(output)
		if i.Write {
			return true, output{Value: i.Value, Found: true}
		}
		return o == st, st
	},
	DescribeOperation: func(in, out any) string {
		i, o := in.(input), out.(output)
		if i.Write {
			return fmt.Sprintf("write %s = %q", i.Key, i.Value)
		}
		if !o.Found {
			return fmt.Sprintf("read %s: none", i.Key)
		}
		return fmt.Sprintf("read %s: %q", i.Key, o.Value)
	},
	DescribeState: func(state any) string {
		if st := state.(output); st.Found {
			return fmt.Sprintf("%q", st.Value)
		}
		return "none"
	},
}

// unobservedLeftOut copies ops without the writes of unknown outcome
// whose value no read returned. That keeps the answer and spares the
// checker a search over when each of them might have taken effect: a
// history with such a write w is linearizable exactly when it is without
// w (w may take effect after everything else; and without w, no read
// would have returned its value anyway, since none did).
func unobservedLeftOut(ops []porcupine.Operation) []porcupine.Operation {
	type kv struct{ key, value string }
	read := map[kv]bool{}
	for _, op := range ops {
		if in, out := op.Input.(input), op.Output.(output); !in.Write && out.Found {
			read[kv{in.Key, out.Value}] = true
		}
	}
	kept := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		if in := op.Input.(input); in.Write && op.Return == math.MaxInt64 && !read[kv{in.Key, in.Value}] {
			continue
		}
		kept = append(kept, op)
	}
	return kept
}

// Check checks the history within timeout. It returns nil when the
// history is linearizable; otherwise an error, after writing the
// checker's visualization (an HTML page) into dir when dir is not "".
// A check that times out is an error too: it proved nothing.
func (r *Recorder) Check(timeout time.Duration, dir string) error {
	r.mu.Lock()
	ops := unobservedLeftOut(r.ops)
	r.mu.Unlock()
	res, info := porcupine.CheckOperationsVerbose(registers, ops, timeout)
	if res == porcupine.Ok {
		return nil
	}
	msg := fmt.Sprintf("lincheck: %d operations checked: %s", len(ops), res)
	if res == porcupine.Unknown {
		msg = fmt.Sprintf("lincheck: %d operations checked: not decided within %v", len(ops), timeout)
	}
	if dir != "" {
		path := filepath.Join(dir, "linearizability.html")
		f, err := os.Create(path)
		if err == nil {
			err = porcupine.Visualize(registers, info, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			msg += "; visualization: " + path
		}
	}
	return fmt.Errorf("%s", msg)
}
