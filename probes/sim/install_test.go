package sim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/tstest"
)

// TestFleetPretendInstall: simulated devices answer install like the
// agent: the signature checked with the fleet's keys, the linux/amd64
// artifact downloaded (cut once and resumed) and verified without being
// kept, the version then in their inventory; a re-sent install is
// already done, a downgrade and a foreign signature are refused, a
// tampered copy fails on its digest.
func TestFleetPretendInstall(t *testing.T) {
	ca := newCA(t)
	a, _ := newArtifactServer(t, 150_000)
	srv := httptest.NewUnstartedServer(a)
	srv.TLS = ca.serverTLS(t)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	const n = 3
	creds := make([]Credentials, n)
	secrets := map[string]string{}
	for i := range creds {
		id := "d-" + strconv.Itoa(i)
		creds[i] = Credentials{Enrollment: apitypes.Enrollment{DeviceID: id, MQTTUsername: id, MQTTPassword: "sd_" + id}}
		secrets[id] = creds[i].MQTTPassword
	}
	a.SetSecrets(secrets)
	b := startBroker(t, brokerOpts{creds: secrets})
	var mu sync.Mutex
	results := map[string]apitypes.CommandResult{}
	inventories := map[string]string{}
	err := b.srv.Subscribe("strata/+/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(pk.TopicName, "/result"):
			var r apitypes.CommandResult
			json.Unmarshal(pk.Payload, &r)
			results[pk.TopicName] = r
		case strings.HasSuffix(pk.TopicName, "/inventory"):
			inventories[pk.TopicName] = string(pk.Payload)
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	cfg := DefaultConfig()
	cfg.Devices, cfg.Credentials = n, creds
	cfg.MQTTAddr, cfg.Plain, cfg.Idle = b.addr, true, true
	cfg.API, cfg.CAPEM = srv.URL, ca.pem
	cfg.TrustedKeys = []ed25519.PublicKey{pub}
	cfg.InstallDownloader = Downloader{InterruptAt: 40_000, Backoff: time.Millisecond}
	f, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	<-f.Ready()
	tstest.WaitFor(t, 10*time.Second, "subscriptions", func() bool { return b.hook.subscribed.Load() == n })

	release := func(k ed25519.PrivateKey, version string) apitypes.SignedManifest {
		now := time.Now().UTC()
		m := apitypes.Manifest{Name: "app", Version: version, Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339),
			Artifacts: []apitypes.Artifact{
				{OS: "linux", Arch: "amd64", Type: "tar", Size: int64(len(a.Data)), SHA256: a.SHA256},
				{OS: "linux", Arch: "arm64", Type: "deb", Size: 1, SHA256: strings.Repeat("0", 64)},
			}}
		sm, err := m.Sign(k)
		if err != nil {
			t.Fatal(err)
		}
		return *sm
	}
	jobN := 0
	install := func(dev int, args apitypes.InstallArgs) apitypes.CommandResult {
		t.Helper()
		jobN++
		job := fmt.Sprintf("j%d", jobN)
		raw, _ := json.Marshal(args)
		cmd, _ := json.Marshal(apitypes.Command{Job: job, Function: "install", Args: raw, Deadline: time.Now().Add(time.Minute)})
		topic := fmt.Sprintf("strata/d-%d/cmd/%s", dev, job)
		if err := b.srv.Publish(topic, cmd, false, 1); err != nil {
			t.Fatal(err)
		}
		var r apitypes.CommandResult
		tstest.WaitFor(t, 10*time.Second, "the result of "+job, func() bool {
			mu.Lock()
			defer mu.Unlock()
			var ok bool
			r, ok = results[topic+"/result"]
			return ok
		})
		return r
	}
	v10 := release(key, "1.0")
	for dev := range n {
		r := install(dev, apitypes.InstallArgs{Release: v10})
		var res apitypes.InstallResult
		json.Unmarshal(r.Result, &res)
		if r.Status != "succeeded" || res.Version != "1.0" || res.Type != "tar" || res.SHA256 != a.SHA256 ||
			res.Bytes != int64(len(a.Data)) || !res.Resumed || res.AlreadyInstalled {
			t.Fatalf("device %d: %+v %+v", dev, r, res)
		}
		if sw := f.Software(dev)["app"]; sw.Version != "1.0" || sw.Type != "tar" {
			t.Fatalf("device %d holds %+v", dev, sw)
		}
	}
	tstest.WaitFor(t, 10*time.Second, "inventory with the version", func() bool {
		mu.Lock()
		defer mu.Unlock()
		inv := inventories["strata/d-0/inventory"]
		var m map[string]json.RawMessage
		return json.Unmarshal([]byte(inv), &m) == nil && string(m["software.app"]) == `"1.0"` &&
			bytes.Contains(m["software"], []byte(`"version":"1.0"`)) && bytes.Contains(m["functions"], []byte(`"install"`))
	})

	r := install(0, apitypes.InstallArgs{Release: v10})
	if !strings.Contains(string(r.Result), `"already_installed":true`) || r.Status != "succeeded" {
		t.Fatalf("again: %+v", r)
	}
	if r := install(0, apitypes.InstallArgs{Release: release(key, "0.9")}); r.Status != "failed" || !strings.Contains(r.Error, "downgrade refused") {
		t.Fatalf("downgrade: %+v", r)
	}
	if r := install(0, apitypes.InstallArgs{Release: release(other, "2.0")}); r.Status != "failed" || !strings.Contains(r.Error, "not trusted") {
		t.Fatalf("foreign key: %+v", r)
	}
	tampered := bytes.Clone(a.Data)
	tampered[1234] ^= 1
	a.SetServed(tampered)
	if r := install(1, apitypes.InstallArgs{Release: release(key, "1.1")}); r.Status != "failed" || !strings.Contains(r.Error, "do not match") {
		t.Fatalf("tampered: %+v", r)
	}
	if sw := f.Software(1)["app"]; sw.Version != "1.0" {
		t.Fatalf("after a failed install device 1 holds %+v", sw)
	}
	st := f.Stats()
	if st.Installs != n || st.InstallFailures["digest"] != 1 || st.InstallFailures["refused"] != 2 {
		t.Fatalf("report: installs %d, failures %v", st.Installs, st.InstallFailures)
	}
}
