package federation

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCert is a certificate for key, signed by the CA (caKey, ca).
func testCert(t *testing.T, serial int64, key *ecdsa.PrivateKey, ca *x509.Certificate, caKey *ecdsa.PrivateKey) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "p1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// A renewal saved a new key and certificate; a crash at any step of the
// save leaves credentials that load as a matching pair, old or new.
func TestRenewalSaveSurvivesACrashAtEveryStep(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	oldCert, newCert := testCert(t, 2, oldKey, ca, caKey), testCert(t, 3, newKey, ca, caKey)

	// The save's steps, in order: write key.new, write cert.new, rename
	// the key, rename the certificate. A crash after each of the first
	// three must load a matching pair.
	steps := []string{"key.new written", "cert.new written", "key renamed"}
	for n, step := range steps {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			if err := writeFileAtomic(filepath.Join(dir, fileCA), pemBlock("CERTIFICATE", caDER), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := writeFileAtomic(filepath.Join(dir, fileConsumer), []byte(`{"consumer":"hq","grant":"read"}`), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := saveCert(dir, oldKey, oldCert); err != nil {
				t.Fatal(err)
			}
			kd, _ := x509.MarshalECPrivateKey(newKey)
			writeFileAtomic(filepath.Join(dir, fileKey+".new"), pemBlock("EC PRIVATE KEY", kd), 0o600)
			if n >= 1 {
				writeFileAtomic(filepath.Join(dir, fileCert+".new"), pemBlock("CERTIFICATE", newCert), 0o644)
			}
			if n >= 2 {
				os.Rename(filepath.Join(dir, fileKey+".new"), filepath.Join(dir, fileKey))
			}
			c, err := loadCreds(dir)
			if err != nil {
				t.Fatalf("credentials after a crash once %s: %v", step, err)
			}
			if got := c.leaf.SerialNumber.Int64(); n >= 1 && got != 3 || n == 0 && got != 2 {
				t.Fatalf("loaded certificate serial %d after a crash once %s", got, step)
			}
		})
	}
}
