package model

import "context"

// ApplyUnchecked applies muts without Mutation.Validate, as a node of an
// earlier version, which checked less, may have stored them.
func ApplyUnchecked(ctx context.Context, m *Model, muts ...Mutation) ([]Entry, error) {
	p := &proposal{muts: muts, done: make(chan struct{})}
	select {
	case m.in <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	<-p.done
	return p.entries, p.err
}
