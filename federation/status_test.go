package federation_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/strata-dm/strata/federation"
	"github.com/strata-dm/strata/internal/tstest"
)

// On an idle link both sides show no lag once the consumer has caught
// up, even though the provider keeps writing node-local records (its
// consumers' cursors, sessions, tokens) that are never published.
func TestIdleLag(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	p.put("/devices/d1", map[string]string{"a": "1"})
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "mirrored", func() bool { return hq.has("/peers/p1/devices/d1", nil) })
	for i := range 5 {
		if err := p.model.PutRecord(context.Background(), "test-local", fmt.Sprint(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	p.put("/devices/d1", map[string]string{"a": "2"})
	// Caught up, and the provider has written records after the last ack
	// (at least its own note of the consumer's cursor): its head is past
	// what the consumer acknowledged, yet nothing is left to send.
	tstest.WaitForErr(t, wait, "no lag on either side of an idle link", func() (bool, error) {
		c, u := hq.peer("p1", "provider"), p.peer("hq", "consumer")
		ok := c.State == "connected" && u.State == "connected" && hq.has("/peers/p1/devices/d1", varIs("a", "2")) &&
			u.Head > u.Cursor && u.LagEntries == 0 && c.LagEntries == 0
		return ok, fmt.Errorf("consumer side cursor %d head %d lag %d; provider side cursor %d head %d lag %d",
			c.Cursor, c.Head, c.LagEntries, u.Cursor, u.Head, u.LagEntries)
	})

}

// An error from an earlier outage is not shown as a connected link's
// error, but as the previous one, with its time.
func TestOldErrorCleared(t *testing.T) {
	hq := newTNode(t, "hq", true)
	p := newTNode(t, "p1", false)
	hq.join(p, federation.GrantRead)
	tstest.WaitFor(t, wait, "connected", func() bool { return hq.peer("p1", "provider").State == "connected" })
	// An outage: the provider restarts; the mount records why it went down.
	p.restart()
	tstest.WaitForErr(t, wait, "reconnected with the old error cleared", func() (bool, error) {
		c := hq.peer("p1", "provider")
		return c.State == "connected" && c.LastError == "" && peerField(c, "previous_error") != nil && peerField(c, "previous_error_time") != nil,
			fmt.Errorf("state %s, last error %q (%v), previous %v", c.State, c.LastError, peerField(c, "last_error_time"), peerField(c, "previous_error"))
	})
}
