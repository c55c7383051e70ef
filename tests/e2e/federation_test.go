package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-dm/strata/internal/tstest"
	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/tests/udpproxy"
)

// fastLinks shortens a node's federation keepalive and idle timeout, so
// that a peer killed without a word is noticed within seconds.
func fastLinks(t *testing.T, n *nodeDir) {
	t.Helper()
	data, err := os.ReadFile(n.config())
	if err != nil {
		t.Fatal(err)
	}
	tune := "federation:\n  keepalive: 300ms\n  idle_timeout: 3s\n"
	s := string(data)
	if strings.Contains(s, "\nfederation:\n") {
		s = strings.Replace(s, "\nfederation:\n", "\n"+tune, 1)
	} else {
		s += tune
	}
	if err := os.WriteFile(n.config(), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// strata runs a strata subcommand and returns stdout.
func strata(t *testing.T, args ...string) string {
	t.Helper()
	return strataWith(t, strataBin, args...)
}

// strataWith runs a subcommand of the strata binary bin.
func strataWith(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("strata %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// peerToken creates a join token on consumer n for peer, as an operator's
// script would: the token alone on stdout.
func (n *nodeDir) peerToken(peer, grant string) string {
	n.t.Helper()
	out := strataWith(n.t, n.strata(), "token", "create", "--config", n.config(), "--kind", "peer", "--peer", peer, "--grant", grant)
	tok := strings.TrimSpace(out)
	if strings.Contains(tok, "\n") || !strings.HasPrefix(tok, "sj_") {
		n.t.Fatalf("token create --kind peer printed %q on stdout; want the token alone", out)
	}
	return tok
}

// joinTo makes provider n publish to the consumer at addr (the running
// node picks it up at once).
func (n *nodeDir) joinTo(addr, token string, publish ...string) {
	n.t.Helper()
	args := []string{"join", "--config", n.config(), "--upstream", addr, "--token", token}
	for _, p := range publish {
		args = append(args, "--publish", p)
	}
	strataWith(n.t, n.strata(), args...)
}

// peerState returns the state of this node's link with name in direction.
func peerState(c *client.Client, name, direction string) (client.Peer, bool) {
	ps, err := c.Peers(context.Background())
	if err != nil {
		return client.Peer{}, false
	}
	for _, p := range ps {
		if p.Name == name && p.Direction == direction {
			return p, true
		}
	}
	return client.Peer{}, false
}

func waitConnected(t *testing.T, c *client.Client, name, direction string) {
	t.Helper()
	tstest.WaitForErr(t, e2eTimeout, fmt.Sprintf("link %s (%s) connected", name, direction), func() (bool, error) {
		p, ok := peerState(c, name, direction)
		return ok && p.State == "connected", nil
	})
}

// Four real processes: HQ, a regional node and two probes without a
// federation listener; devices on the probes. An operator at HQ browses
// the probes' devices and runs a command through two hops.
func TestFederationEndToEnd(t *testing.T) {
	hq := initNode(t, "hq", "--role", "hq", "--federation-addr", freeUDP(t))
	eu := initNode(t, "eu", "--role", "regional", "--federation-addr", freeUDP(t))
	p7 := initDeviceNode(t, "plant7", "--role", "probe")
	p8 := initDeviceNode(t, "plant8", "--role", "probe")
	for _, n := range []*nodeDir{hq, eu, p7, p8} {
		fastLinks(t, n)
		n.start()
	}
	hqFed, euFed := fedAddr(t, hq), fedAddr(t, eu)

	eu.joinTo(hqFed, hq.peerToken("eu", "operate"))
	p7.joinTo(euFed, eu.peerToken("plant7", "operate"), "/devices")
	p8.joinTo(euFed, eu.peerToken("plant8", "read"), "/devices")
	admin := hq.admin()
	waitConnected(t, admin, "eu", "provider")
	waitConnected(t, eu.admin(), "plant7", "provider")
	waitConnected(t, eu.admin(), "plant8", "provider")
	if p, _ := peerState(p7.admin(), "eu", "consumer"); p.State != "connected" {
		t.Fatalf("plant7 sees its consumer as %+v", p)
	}

	// Devices: the real agent on plant7, a Paho device on plant8.
	startAgent(t, p7, t.TempDir())
	d8 := mustConnectDevice(t, p8.enroll("lab", "hw-8"))
	d8.mustPublish("telemetry", map[string]any{"temp": 41.5})

	var agentPath string
	tstest.WaitForErr(t, e2eTimeout, "the agent's device at HQ", func() (bool, error) {
		tree, err := admin.Tree(context.Background(), "/peers/eu/peers/plant7/devices", client.TreeOptions{Depth: 1})
		if err != nil || len(tree.Children) != 1 {
			return false, err
		}
		agentPath = "/peers/eu/peers/plant7/devices/" + tree.Children[0].Name
		c, err := admin.GetContext(context.Background(), agentPath)
		if err != nil {
			return false, err
		}
		_, host := c.Variables["hostname"]
		return host && len(c.Functions) >= 5, nil
	})
	d8Path := "/peers/eu/peers/plant8/devices/" + d8.e.DeviceID
	tstest.WaitForErr(t, e2eTimeout, "plant8's telemetry at HQ", func() (bool, error) {
		v, err := variable(admin, d8Path, "temp")
		return v == "41.5", err
	})

	// A command through two hops, answered by the real agent.
	job, status, err := admin.CallFunction(context.Background(), agentPath, "ping", nil, 30*time.Second)
	if err != nil || status != http.StatusOK || job.State != "succeeded" {
		t.Fatalf("ping through two hops: %d %+v %v", status, job, err)
	}
	var pong struct{ Pong bool }
	if json.Unmarshal(job.Result, &pong); !pong.Pong {
		t.Fatalf("ping result %s", job.Result)
	}
	// Without waiting: 202 with the owning node, where the job is followed.
	job, status, err = admin.CallFunction(context.Background(), agentPath, "ping", nil, 0)
	if err != nil || status != http.StatusAccepted || job.Node != "/peers/eu/peers/plant7" {
		t.Fatalf("ping without waiting: %d %+v %v", status, job, err)
	}
	tstest.WaitForErr(t, e2eTimeout, "the job followed through two hops", func() (bool, error) {
		j, err := admin.GetJobOn(context.Background(), job.Node, job.Job)
		return err == nil && j.State == "succeeded", err
	})
	// The job's progress reaches HQ as events on the mirrored device.
	tstest.WaitForErr(t, e2eTimeout, "job events at HQ", func() (bool, error) {
		page, err := admin.Events(context.Background(), agentPath, client.EventQuery{})
		if err != nil {
			return false, err
		}
		for _, e := range page.Events {
			if e.Name == "job" && strings.Contains(string(e.Payload), `"succeeded"`) {
				return true, nil
			}
		}
		return false, nil
	})
	// plant8 granted eu read only: calls are refused by plant8, clearly.
	_, _, err = admin.CallFunction(context.Background(), d8Path, "ping", nil, 5*time.Second)
	if statusOf(err) != http.StatusForbidden {
		t.Fatalf("call through a read grant: %v", err)
	}
	// Mirrors are read-only at HQ.
	if _, _, err := admin.PutContext(context.Background(), d8Path, client.ContextUpdate{Labels: map[string]string{"x": "y"}}); statusOf(err) != http.StatusConflict {
		t.Fatalf("write into a mirror: %v", err)
	}
	// The owning probe audited the call it received.
	tstest.WaitForErr(t, e2eTimeout, "audit at plant7", func() (bool, error) {
		recs, err := p7.admin().Audit(context.Background(), 10)
		for _, r := range recs {
			if strings.Contains(fmt.Sprint(r), "ping") {
				return true, nil
			}
		}
		return false, err
	})

	out, err := hq.ctl("federation", "verify")
	if err != nil {
		t.Fatalf("federation verify at HQ: %v\n%s", err, out)
	}
	if !strings.Contains(out, "eu") {
		t.Fatalf("verify output: %s", out)
	}
	if out, err := eu.ctl("federation", "verify"); err != nil {
		t.Fatalf("federation verify at eu: %v\n%s", err, out)
	}

	// A probe stopped: a call to its device answers at once, clearly.
	p7.kill()
	tstest.WaitForErr(t, e2eTimeout, "plant7 down at eu", func() (bool, error) {
		p, _ := peerState(eu.admin(), "plant7", "provider")
		return p.State != "connected", nil
	})
	start := time.Now()
	_, _, err = admin.CallFunction(context.Background(), agentPath, "ping", nil, 10*time.Second)
	if statusOf(err) != http.StatusServiceUnavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("call to a probe that is down: %v after %v", err, time.Since(start))
	}
}

// fedAddr is the federation address written in a node's config.
func fedAddr(t *testing.T, n *nodeDir) string {
	t.Helper()
	data, err := os.ReadFile(n.config())
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "federation:") {
			in = true
			continue
		}
		if in && strings.HasPrefix(strings.TrimSpace(line), "addr:") {
			return strings.Trim(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "addr:")), `"'`)
		}
		if in && len(line) > 0 && line[0] != ' ' {
			break
		}
	}
	t.Fatalf("no federation.addr in %s", n.config())
	return ""
}

// Faults between real processes: UDP proxies between the tiers; a long
// partition while devices keep producing telemetry and events, then kill -9
// of the regional node mid-stream and of HQ. After healing, every mirror
// verifies equal to its source and no acknowledged event is lost.
func TestFederationFaults(t *testing.T) {
	partition := 60 * time.Second
	if d, err := time.ParseDuration(os.Getenv("STRATA_FED_PARTITION")); err == nil {
		partition = d
	}
	hq := initNode(t, "hq", "--role", "hq", "--federation-addr", freeUDP(t))
	eu := initNode(t, "eu", "--role", "regional", "--federation-addr", freeUDP(t))
	p7 := initDeviceNode(t, "plant7", "--role", "probe")
	for _, n := range []*nodeDir{hq, eu, p7} {
		fastLinks(t, n)
		n.start()
	}
	toHQ, err := udpproxy.New("127.0.0.1:0", fedAddr(t, hq))
	if err != nil {
		t.Fatal(err)
	}
	defer toHQ.Close()
	toEU, err := udpproxy.New("127.0.0.1:0", fedAddr(t, eu))
	if err != nil {
		t.Fatal(err)
	}
	defer toEU.Close()
	eu.joinTo(toHQ.Addr(), hq.peerToken("eu", "operate"))
	p7.joinTo(toEU.Addr(), eu.peerToken("plant7", "operate"), "/devices")
	waitConnected(t, hq.admin(), "eu", "provider")
	waitConnected(t, eu.admin(), "plant7", "provider")

	// Devices produce telemetry and numbered events; each acknowledged
	// (PUBACK) event is remembered.
	const devices = 4
	var (
		mu    sync.Mutex
		acked = map[string]map[int]bool{} // device id → event numbers
	)
	ctx, stopDevices := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ids []string
	for i := range devices {
		d := mustConnectDevice(t, p7.enroll("lab", fmt.Sprintf("hw-%d", i)))
		ids = append(ids, d.e.DeviceID)
		mine := map[int]bool{}
		mu.Lock()
		acked[d.e.DeviceID] = mine
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				d.publish("telemetry", map[string]any{"n": n, "temp": 20 + n%10})
				if n%5 == 0 {
					if d.publish("events", map[string]any{"name": "tick", "level": "alert", "payload": map[string]int{"n": n}}) == nil {
						mu.Lock()
						mine[n] = true
						mu.Unlock()
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
	}
	tstest.WaitForErr(t, e2eTimeout, "devices mirrored at HQ", func() (bool, error) {
		tree, err := hq.admin().Tree(context.Background(), "/peers/eu/peers/plant7/devices", client.TreeOptions{Depth: 1})
		return err == nil && len(tree.Children) == devices, err
	})

	// Partition both links, devices still producing.
	toEU.Blackhole(true)
	toHQ.Blackhole(true)
	time.Sleep(partition) // the partition's length is the scenario, not synchronisation
	toEU.Blackhole(false)
	toHQ.Blackhole(false)
	// Mid-stream: as soon as the regional node is applying plant7's
	// backlog, kill it, and bring it back on the same addresses.
	tstest.WaitForErr(t, e2eTimeout, "eu catching up", func() (bool, error) {
		p, _ := peerState(eu.admin(), "plant7", "provider")
		return p.State == "connected", nil
	})
	eu.kill()
	eu.start()
	waitConnected(t, hq.admin(), "eu", "provider")
	hq.kill()
	hq.start()
	stopDevices()
	wg.Wait()

	// Converged: both mirrors verify, every acknowledged event is at HQ.
	for _, n := range []*nodeDir{eu, hq} {
		var last string
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := n.ctl("federation", "verify")
			if err == nil {
				break
			}
			last = out + err.Error()
			if time.Now().After(deadline) {
				t.Fatalf("mirrors at %s never verified: %s", n.dir, last)
			}
			time.Sleep(500 * time.Millisecond) // polling interval
		}
	}
	admin := hq.admin()
	for _, id := range ids {
		path := "/peers/eu/peers/plant7/devices/" + id
		got := map[int]bool{}
		var before uint64
		for {
			page, err := admin.Events(context.Background(), path, client.EventQuery{Limit: 1000, Before: before, Level: "alert"})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Events {
				var p struct{ N int }
				if e.Name == "tick" && json.Unmarshal(e.Payload, &p) == nil {
					got[p.N] = true
				}
			}
			if page.Next == 0 {
				break
			}
			before = page.Next
		}
		mu.Lock()
		for n := range acked[id] {
			if !got[n] {
				t.Errorf("device %s: acknowledged event %d missing at HQ", id, n)
			}
		}
		t.Logf("device %s: %d acknowledged events, all at HQ: %v", id, len(acked[id]), !t.Failed())
		mu.Unlock()
	}
	if p, _ := peerState(admin, "eu", "provider"); p.Gaps != 0 {
		t.Errorf("gaps at HQ: %+v", p)
	}
}
