package mqtt

import (
	"net"
	"testing"
	"time"
)

// recordingConn records the deadlines set on it.
type recordingConn struct {
	net.Conn
	set []time.Time
}

func (c *recordingConn) SetDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// The deadline a gated connection keeps is never earlier than the one
// asked for (a device is not dropped before 1.5 × its keepalive), small
// moves later are not passed on, and earlier ones and none are.
func TestGatedDeadlineNeverEarlierThanAsked(t *testing.T) {
	dc := &recordingConn{}
	c := &gatedConn{Conn: dc}
	now := time.Now()
	in := func() time.Time { return dc.set[len(dc.set)-1] }
	check := func(step string, asked time.Time, calls int) {
		t.Helper()
		if len(dc.set) != calls {
			t.Fatalf("%s: %d deadlines set on the socket, want %d", step, len(dc.set), calls)
		}
		if !asked.IsZero() && in().Before(asked) {
			t.Fatalf("%s: the socket's deadline %v is before the one asked for, %v", step, in(), asked)
		}
	}
	first := now.Add(90 * time.Second) // 1.5 × a keepalive of 60 s
	c.SetDeadline(first)
	check("first", first, 1)
	if slack := in().Sub(first); slack <= 0 || slack > 12*time.Second {
		t.Fatalf("slack %v, want within (0, 90 s / 8]", slack)
	}
	later := first.Add(time.Second) // the next packet, a second later
	c.SetDeadline(later)
	check("a second later", later, 1)
	much := first.Add(20 * time.Second) // beyond the slack
	c.SetDeadline(much)
	check("twenty seconds later", much, 2)
	earlier := now.Add(time.Second)
	c.SetDeadline(earlier)
	check("earlier", earlier, 3)
	c.SetDeadline(time.Time{})
	check("none", time.Time{}, 4)
	if !in().IsZero() {
		t.Fatalf("no deadline asked for, %v set", in())
	}
	c.SetDeadline(first)
	check("again after none", first, 5)
}
