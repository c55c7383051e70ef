package sim

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/probes/download/downloadtest"
)

// newArtifactServer serves size random bytes over TLS (downloadtest).
func newArtifactServer(t *testing.T, size int) (*downloadtest.Server, *httptest.Server) {
	t.Helper()
	a := downloadtest.New(size)
	return a, downloadtest.Start(t, a)
}

// TestFleetDownload: a fleet's device downloads with its own credentials
// over the fleet's network (Config.API, Config.CAPEM), resuming after a
// cut; another device's credentials are refused.
func TestFleetDownload(t *testing.T) {
	ca := newCA(t)
	a, _ := newArtifactServer(t, 200_000)
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
		if id == "d-1" {
			creds[i].MQTTPassword = "s3cret"
		}
		secrets[id] = creds[i].MQTTPassword
	}
	b := startBroker(t, brokerOpts{creds: secrets})
	cfg := DefaultConfig()
	cfg.Devices, cfg.Credentials = n, creds
	cfg.MQTTAddr, cfg.Plain, cfg.Idle = b.addr, true, true
	cfg.API, cfg.CAPEM = srv.URL, ca.pem
	f, err := NewFleet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := f.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	select {
	case <-f.Ready():
	case <-ctx.Done():
		t.Fatal("fleet not ready")
	}

	var out bytes.Buffer
	res, err := f.Download(ctx, 1, a.SHA256, &out, Downloader{InterruptAt: 70_000, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), a.Data) || res.Resumes != 1 || res.Received != int64(len(a.Data)) {
		t.Fatalf("fleet download: %+v", res)
	}
	var de *DownloadError
	if _, err := f.Download(ctx, 2, a.SHA256, new(bytes.Buffer), Downloader{}); !errors.As(err, &de) || de.Status != http.StatusUnauthorized {
		t.Fatalf("device 2: %v", err)
	}
	if _, err := f.Download(ctx, n, a.SHA256, new(bytes.Buffer), Downloader{}); err == nil {
		t.Fatal("a device out of range downloaded")
	}

	// The whole fleet, each device cut once: one device refused.
	rep := f.DownloadAll(ctx, a.SHA256, 2, Downloader{InterruptAt: 50_000, Backoff: time.Millisecond})
	if rep.Devices != n || rep.OK != 1 || rep.Failed != 2 || rep.Errors["http_401"] != 2 || rep.Resumes != 1 ||
		rep.Bytes != int64(len(a.Data)) || rep.Throughput <= 0 {
		t.Fatalf("all, one device let in: %+v", rep)
	}
	a.SetSecrets(secrets)
	rep = f.DownloadAll(ctx, a.SHA256, 2, Downloader{InterruptAt: 50_000, Backoff: time.Millisecond})
	if rep.OK != n || rep.Failed != 0 || rep.Resumes != n || rep.Bytes != int64(n*len(a.Data)) || rep.Requests != 2*n {
		t.Fatalf("all: %+v", rep)
	}
}
