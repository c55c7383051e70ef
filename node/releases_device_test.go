package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/config"
	"github.com/strata-dm/strata/probes/sim"
)

// TestDeviceDownloadFromNode: on a real node's HTTPS listener, an enrolled
// device downloads a shared release's artifact with its own credentials
// (probes/sim's downloader, cut once and resumed, the bytes verified by
// SHA-256); once revoked it is refused.
func TestDeviceDownloadFromNode(t *testing.T) {
	ctx := context.Background()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	id, err := WriteIdentity(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Name, cfg.Dir = "probe", dir
	cfg.API.Addr = "127.0.0.1:0"
	cfg.MQTT.TCPAddr = "127.0.0.1:0"
	cfg.Software.TrustedKeys = []string{base64.StdEncoding.EncodeToString(pub)}
	file := filepath.Join(dir, "strata.yaml")
	writeConfig(t, file, cfg)
	p := &probeNode{fedNode: fedNode{file: file}, token: id.AdminToken, ca: id.CAPEM}
	p.start(t)

	data := make([]byte, 256<<10)
	rand.Read(data)
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	now := time.Now().UTC()
	m := apitypes.Manifest{Name: "agent", Version: "1.0", Created: now.Format(time.RFC3339), Expires: now.Add(time.Hour).Format(time.RFC3339),
		Artifacts: []apitypes.Artifact{{OS: "linux", Arch: "amd64", Type: apitypes.ArtifactBinary, Size: int64(len(data)), SHA256: sum}}}
	sm, err := m.Sign(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.admin.PutRelease(ctx, "agent", "1.0", sm); err != nil {
		t.Fatal(err)
	}
	if _, err := p.admin.UploadArtifact(ctx, "agent", "1.0", sum, 0, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}

	d := enrollSim(t, p.n, "", "hw-1", "s1", "linux")
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(hc.CloseIdleConnections)
	dl := sim.Downloader{API: "https://" + p.n.APIAddr(), Client: hc, InterruptAt: 100_000, Backoff: time.Millisecond}
	creds := sim.Credentials{Enrollment: apitypes.Enrollment{DeviceID: d.e.DeviceID, MQTTUsername: d.e.MQTTUsername, MQTTPassword: d.e.MQTTPassword}}
	var out bytes.Buffer
	res, err := dl.Download(ctx, creds, sum, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) || res.Resumes != 1 || res.Received != int64(len(data)) {
		t.Fatalf("download %+v", res)
	}

	if _, err := p.n.devices.Revoke(ctx, &auth.Principal{User: "admin", System: true}, d.e.DeviceID); err != nil {
		t.Fatal(err)
	}
	var de *sim.DownloadError
	if _, err := dl.Download(ctx, creds, sum, new(bytes.Buffer)); !errors.As(err, &de) || de.Status != http.StatusUnauthorized {
		t.Fatalf("revoked device: %v", err)
	}
}
