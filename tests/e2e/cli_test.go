package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestVersion(t *testing.T) {
	out, err := exec.Command(strataBin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "strata ") {
		t.Fatalf("strata version: %q, %v", out, err)
	}
}

// A typo in the config file stops the node at start with a clear message.
func TestUnknownConfigKeyFails(t *testing.T) {
	n := initNode(t, "typo")
	f, err := os.OpenFile(n.config(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("retention:\n  event_max_agee: 1h\n")
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, strataBin, "serve", "--config", n.config()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "event_max_agee") {
		t.Fatalf("serve with an unknown key: err=%v\n%s", err, out)
	}
}

// Health, readiness and metrics are served over TLS without a token;
// anything below /api/v1 needs one; plain HTTP on the TLS port is refused.
func TestOperationalEndpoints(t *testing.T) {
	n := initNode(t, "ops")
	n.start()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(n.caPEM())
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	get := func(path string) (int, string) {
		resp, err := hc.Get("https://" + n.addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "strata_model_last_seq") {
		t.Fatalf("metrics %d", code)
	}
	if code, body := get("/api/v1/openapi.json"); code != 200 || !strings.Contains(body, "openapi") {
		t.Fatalf("openapi %d", code)
	}
	if code, body := get("/api/v1/tree"); code != 401 || !strings.Contains(body, `"code":"unauthorized"`) {
		t.Fatalf("tree without token: %d %s", code, body)
	}
	resp, err := http.Get("http://" + n.addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS port")
		}
	}
	old := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}}}
	if resp, err := old.Get("https://" + n.addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("TLS 1.1 accepted")
	}
	n.stop()
}
