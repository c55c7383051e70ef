package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/strata-dm/strata/node/client"
)

// initDeviceNode initialises a node with an MQTT-over-TLS listener.
func initDeviceNode(t *testing.T, name string, extra ...string) *nodeDir {
	t.Helper()
	return initNode(t, name, append([]string{"--mqtt-addr", freeAddr(t)}, extra...)...)
}

// enrollToken creates an enrollment token with `strata token create`, the
// way an operator's script would, and returns the secret from stdout.
func (n *nodeDir) enrollToken(group string, extra ...string) string {
	n.t.Helper()
	args := append([]string{"token", "create", "--config", n.config(), "--kind", "enroll", "--group", group}, extra...)
	cmd := exec.Command(n.strata(), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		n.t.Fatalf("strata token create: %v\n%s", err, stderr.String())
	}
	tok := strings.TrimSpace(stdout.String())
	if strings.Contains(tok, "\n") || !strings.HasPrefix(tok, "se_") {
		n.t.Fatalf("token create printed %q on stdout; want the token alone", stdout.String())
	}
	return tok
}

// enroll enrolls a device with a fresh token of group and returns its
// credentials.
func (n *nodeDir) enroll(group, hardwareID string) *client.Enrollment {
	n.t.Helper()
	tok := n.enrollToken(group)
	e, err := n.client("").Enroll(context.Background(), client.EnrollRequest{Token: tok, HardwareID: hardwareID})
	if err != nil {
		n.t.Fatalf("enroll: %v", err)
	}
	return e
}

// device is a device driven by Eclipse Paho, an MQTT client nobody here
// wrote.
type device struct {
	t   *testing.T
	e   *client.Enrollment
	c   paho.Client
	mu  sync.Mutex
	got []client.Job // commands received, as {job, function, args}
}

type command struct {
	Job      string          `json:"job"`
	Function string          `json:"function"`
	Args     json.RawMessage `json:"args"`
	Deadline time.Time       `json:"deadline"`
}

// connectDevice connects with clean session off and subscribes to the
// command topic; received commands are recorded, not answered.
func connectDevice(t *testing.T, e *client.Enrollment) (*device, error) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(e.CAPEM)) {
		t.Fatal("enrollment ca_pem holds no certificate")
	}
	d := &device{t: t, e: e}
	o := paho.NewClientOptions().AddBroker("ssl://" + e.MQTTAddress).
		SetClientID(e.DeviceID).SetUsername(e.MQTTUsername).SetPassword(e.MQTTPassword).
		SetTLSConfig(&tls.Config{RootCAs: pool}).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			c.Subscribe(e.TopicPrefix+"cmd/+", 1, func(_ paho.Client, m paho.Message) {
				var cmd command
				json.Unmarshal(m.Payload(), &cmd)
				d.mu.Lock()
				d.got = append(d.got, client.Job{ID: cmd.Job, Function: cmd.Function, Args: cmd.Args, Deadline: cmd.Deadline})
				d.mu.Unlock()
			})
		})
	d.c = paho.NewClient(o)
	tok := d.c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { d.c.Disconnect(0) })
	return d, nil
}

func mustConnectDevice(t *testing.T, e *client.Enrollment) *device {
	t.Helper()
	d, err := connectDevice(t, e)
	if err != nil {
		t.Fatalf("device %s: connect: %v", e.DeviceID, err)
	}
	return d
}

// publish sends a QoS 1 message and waits for its PUBACK.
func (d *device) publish(sub string, payload any) error {
	b, ok := payload.([]byte)
	if !ok {
		b, _ = json.Marshal(payload)
	}
	tok := d.c.Publish(d.e.TopicPrefix+sub, 1, false, b)
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("publish %s: no PUBACK", sub)
	}
	return tok.Error()
}

func (d *device) mustPublish(sub string, payload any) {
	d.t.Helper()
	if err := d.publish(sub, payload); err != nil {
		d.t.Fatal(err)
	}
}

// e2eTimeout bounds each wait of these tests: real processes on a busy
// machine.
const e2eTimeout = 30 * time.Second

func (d *device) commands() []client.Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]client.Job(nil), d.got...)
}

// variable reads one variable of a context.
func variable(c *client.Client, path, name string) (string, error) {
	ctx, err := c.GetContext(context.Background(), path)
	if err != nil {
		return "", err
	}
	v, ok := ctx.Variables[name]
	if !ok {
		return "", fmt.Errorf("%s has no variable %s", path, name)
	}
	return string(v.Value), nil
}

// statusOf returns the HTTP status of a client error.
func statusOf(err error) int {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	if err == nil {
		return http.StatusOK
	}
	return 0
}
