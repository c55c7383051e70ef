package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestCAAndServer(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ca, err := newCA("test CA", now)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid {
		t.Fatal("CA certificate is not a CA")
	}
	if got := ca.Cert.NotAfter.Sub(now); got != CAValidity.Truncate(time.Second) {
		t.Errorf("CA validity = %v, want %v", got, CAValidity)
	}
	k, ok := ca.Key.(*ecdsa.PrivateKey)
	if !ok || k.Curve != elliptic.P256() {
		t.Fatalf("CA key is %T, want ECDSA P-256", ca.Key)
	}

	srv, err := ca.issueServer("api", []string{"localhost", "127.0.0.1", "::1", "node.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Cert.IsCA {
		t.Error("server certificate is a CA")
	}
	if got := srv.Cert.NotAfter.Sub(now); got != ServerValidity {
		t.Errorf("server validity = %v, want %v", got, ServerValidity)
	}
	if !slices.Equal(srv.Cert.DNSNames, []string{"localhost", "node.example"}) {
		t.Errorf("DNS names = %v", srv.Cert.DNSNames)
	}
	if len(srv.Cert.IPAddresses) != 2 {
		t.Errorf("IP addresses = %v", srv.Cert.IPAddresses)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	for _, host := range []string{"localhost", "127.0.0.1", "::1", "node.example"} {
		_, err := srv.Cert.Verify(x509.VerifyOptions{
			DNSName:     host,
			Roots:       roots,
			CurrentTime: now,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("verify %s: %v", host, err)
		}
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: roots, CurrentTime: now}); err == nil {
		t.Error("certificate verified for a host it does not name")
	}
	if _, err := srv.IssueServer("x", []string{"localhost"}); err == nil {
		t.Error("a server certificate signed another certificate")
	}
	if _, err := ca.IssueServer("x", nil); err == nil {
		t.Error("issued a certificate without hosts")
	}
}

func TestServerValidityCappedByCA(t *testing.T) {
	now := time.Now()
	ca, err := newCA("ca", now.Add(-CAValidity+24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.issueServer("api", []string{"localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Cert.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("server certificate outlives its CA: %v > %v", srv.Cert.NotAfter, ca.Cert.NotAfter)
	}
}

func TestServerHosts(t *testing.T) {
	hn, _ := os.Hostname()
	got := ServerHosts("0.0.0.0", "::", "[::1]", "LOCALHOST", "", "10.1.2.3", "api.example", "api.example")
	want := []string{"localhost", "127.0.0.1", "::1"}
	if hn != "" && hn != "localhost" {
		want = append(want, hn)
	}
	want = append(want, "10.1.2.3", "api.example")
	if !slices.Equal(got, want) {
		t.Errorf("ServerHosts = %v, want %v", got, want)
	}
}

func TestWriteLoadAndHandshake(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.IssueServer("api", ServerHosts())
	if err != nil {
		t.Fatal(err)
	}
	caCrt, caKey := filepath.Join(dir, "tls", "ca.crt"), filepath.Join(dir, "tls", "ca.key")
	crt, key := filepath.Join(dir, "tls", "api.crt"), filepath.Join(dir, "tls", "api.key")
	if err := ca.WriteFiles(caCrt, caKey); err != nil {
		t.Fatal(err)
	}
	if err := srv.WriteFiles(crt, key); err != nil {
		t.Fatal(err)
	}
	// Overwriting keeps the modes.
	if err := srv.WriteFiles(crt, key); err != nil {
		t.Fatal(err)
	}
	for file, mode := range map[string]os.FileMode{caCrt: 0o644, caKey: 0o600, crt: 0o644, key: 0o600} {
		st, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", file, st.Mode().Perm(), mode)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "tls"))
	if len(entries) != 4 {
		t.Errorf("tls folder holds %d entries, want 4 (temporary files left?)", len(entries))
	}

	loaded, err := LoadPair(caCrt, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("loaded CA differs")
	}
	// A loaded CA can still sign.
	if _, err := loaded.IssueServer("again", []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadPair(crt, caKey); err == nil {
		t.Error("loaded a certificate with a key that does not match")
	}
	if _, err := LoadPair(filepath.Join(dir, "missing"), key); err == nil {
		t.Error("loaded a missing file")
	}

	scfg, err := ServerConfig(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if scfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("server MinVersion = %x", scfg.MinVersion)
	}
	ccfg, err := ClientConfig(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("client MinVersion = %x", ccfg.MinVersion)
	}
	if err := handshake(t, scfg, ccfg, "localhost"); err != nil {
		t.Errorf("handshake with the CA: %v", err)
	}

	other, _ := NewCA("other")
	wrong, err := ClientConfig(other.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, scfg, wrong, "localhost"); err == nil {
		t.Error("handshake succeeded with a client trusting another CA")
	}
	old := ccfg.Clone()
	old.MaxVersion = tls.VersionTLS11
	if err := handshake(t, scfg, old, "localhost"); err == nil {
		t.Error("server accepted TLS 1.1")
	}
}

func TestClientConfig(t *testing.T) {
	cfg, err := ClientConfig(nil)
	if err != nil || cfg.RootCAs != nil {
		t.Fatalf("ClientConfig(nil) = %v, %v; want system roots", cfg.RootCAs, err)
	}
	if _, err := ClientConfig([]byte("not a pem")); err == nil {
		t.Error("accepted a CA PEM without certificates")
	}
}

// handshake runs a TLS handshake over loopback TCP (kernel buffers keep a
// failing side from blocking the other, unlike net.Pipe).
func handshake(t *testing.T, server, client *tls.Config, name string) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if c.(*tls.Conn).Handshake() == nil {
			io.WriteString(c, "x")
		}
	}()
	defer func() { <-done }()
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), withName(client, name))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadFull(c, make([]byte, 1))
	return err
}

func withName(c *tls.Config, name string) *tls.Config {
	c = c.Clone()
	c.ServerName = name
	return c
}
