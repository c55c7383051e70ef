package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/client"
)

// An acknowledged variable write reaches history across kill -9 of the
// node, before any flush of history: the samples are replayed from the
// change log after the restart, each exactly once.
func TestHistorySurvivesKill(t *testing.T) {
	ctx := context.Background()
	n := initNode(t, "hist")
	f, err := os.OpenFile(n.config(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// No flush but the last: every sample is in the log only.
	fmt.Fprint(f, "history:\n  flush_interval: 1h\n  types: [pump]\n")
	f.Close()
	n.start()
	c := n.admin()
	// History keeps one sample per millisecond of a series (the first):
	// the writes' own times say which values to expect.
	var want []float64
	var last time.Time
	for i := range 30 {
		x, _, err := c.PutContext(ctx, "/plant/p1", client.ContextUpdate{Type: "pump",
			Variables: map[string]json.RawMessage{"temp": json.RawMessage(fmt.Sprint(20 + i))}})
		if err != nil {
			t.Fatal(err)
		}
		if at := x.Variables["temp"].Time.Truncate(time.Millisecond); at.After(last) {
			want, last = append(want, float64(20+i)), at
		}
	}
	k := len(want)
	read := func() int {
		h, err := c.History(ctx, "/plant/p1", client.HistoryQuery{Var: "temp"})
		if err != nil {
			t.Fatal(err)
		}
		return len(h.Points)
	}
	deadline := time.Now().Add(20 * time.Second)
	for read() != k {
		if time.Now().After(deadline) {
			t.Fatalf("history has %d points before the kill, want %d", read(), k)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	n.kill()
	n.start()
	c = n.admin()
	deadline = time.Now().Add(20 * time.Second)
	for got := read(); got != k; got = read() {
		if got > k || time.Now().After(deadline) {
			t.Fatalf("history has %d points after kill -9, want %d", got, k)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	h, err := c.History(ctx, "/plant/p1", client.HistoryQuery{Var: "temp"})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range h.Points {
		if p.V == nil || *p.V != want[i] {
			t.Fatalf("point %d after kill -9: %+v", i, p)
		}
	}
	n.stop()
}
