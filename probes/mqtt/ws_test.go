package mqtt

import (
	"context"
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/internal/tstest"
)

// freeLoopbackAddr returns a loopback address nobody listened on a moment
// ago: mochi's WebSocket listener binds its configured address itself and
// cannot report the port it got for port 0.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A device connects over the plain WebSocket listener with Paho and its
// telemetry lands in the tree.
func TestWebSocketListener(t *testing.T) {
	m := testTree(t)
	b := startBroker(t, Config{
		WSAddr:  freeLoopbackAddr(t),
		Devices: &fakeDevices{secrets: map[string]string{"d1": "s1"}}, Tree: m,
	})
	addr := b.Addr("ws")
	// The listener binds on its own goroutine after Start returns.
	tstest.WaitFor(t, tstest.DefaultTimeout, "the WebSocket listener", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})

	connect := func(secret string) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker("ws://" + addr).
			SetClientID("d1").SetUsername("d1").SetPassword(secret).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, context.DeadlineExceeded
		}
		if tok.Error() != nil {
			return nil, tok.Error()
		}
		t.Cleanup(func() { c.Disconnect(0) })
		return c, nil
	}
	if _, err := connect("wrong"); err == nil {
		t.Fatal("a wrong secret connected over WebSocket")
	}
	c, err := connect("s1")
	if err != nil {
		t.Fatalf("connect over WebSocket: %v", err)
	}
	publish(t, c, "strata/d1/telemetry", 1, `{"ws": true, "temp": 19.5}`)
	got, err := m.Get(DevicePath("d1"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Variables["ws"].Value) != "true" || string(got.Variables["temp"].Value) != "19.5" || got.Tenant != "t1" {
		t.Fatalf("after a WebSocket publish: %+v", got)
	}
	if !b.Online("d1") {
		t.Fatal("device not online")
	}
	// The ACL holds on this listener too (3.1.1: the connection closes).
	c.Publish("strata/d2/telemetry", 1, false, `{"x": 1}`).WaitTimeout(time.Second)
	tstest.WaitFor(t, tstest.DefaultTimeout, "disconnect after a foreign publish", func() bool { return !c.IsConnectionOpen() })
	tstest.WaitFor(t, tstest.DefaultTimeout, "offline", func() bool {
		got, _ := m.Get(DevicePath("d1"))
		return string(got.Variables["online"].Value) == "false"
	})
	if _, err := m.Get(DevicePath("d2")); err == nil {
		t.Fatal("d1 wrote into d2 over WebSocket")
	}
}
