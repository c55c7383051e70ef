package federation

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-dm/strata/internal/atomicfile"
)

// listenerValidity is the lifetime of the listener's own certificate,
// issued from the CA at every start.
const listenerValidity = 365 * 24 * time.Hour

// issue signs a certificate for pub with the CA: common name cn, the given
// extended usage, valid from a minute ago for validity (never beyond the
// CA).
func issue(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, cn string, usage x509.ExtKeyUsage, validity time.Duration) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Strata federation"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{usage},
		BasicConstraintsValid: true,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
}

// listenerCert issues the consumer listener's certificate from the CA.
func listenerCert(name string, ca *x509.Certificate, caKey crypto.Signer) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := issue(ca, caKey, key.Public(), name, x509.ExtKeyUsageServerAuth, listenerValidity)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("federation: listener certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// newCSR makes a key and a certificate request naming the node.
func newCSR(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

// signCSR checks a DER certificate request and signs a client certificate
// for its key naming the node (the request's own subject is ignored).
func signCSR(ca *x509.Certificate, caKey crypto.Signer, csrDER []byte, name string, validity time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	der, err := issue(ca, caKey, csr.PublicKey, name, x509.ExtKeyUsageClientAuth, validity)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// fingerprint is the SHA-256 of a certificate's DER.
func fingerprint(der []byte) []byte {
	sum := sha256.Sum256(der)
	return sum[:]
}

// verifyChain checks that the leaf of raw chains to ca for usage, at now.
// Host names are not checked: a node is identified by its CA and name.
func verifyChain(raw [][]byte, ca *x509.Certificate, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(raw) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil && !c.Equal(ca) {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return nil, err
	}
	return leaf, nil
}

// creds are what a provider keeps per upstream after joining.
type creds struct {
	cert     tls.Certificate
	leaf     *x509.Certificate
	ca       *x509.Certificate
	consumer string
	grant    string
	subtrees []string
}

// Files in an upstream's state folder.
const (
	fileKey      = "node.key"
	fileCert     = "node.crt"
	fileCA       = "ca.crt"
	fileConsumer = "consumer.json"
)

// writeFileAtomic replaces path with data at mode, making its folder
// first: a crash leaves the old content or the new.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, data, mode)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("%s: no PEM %s block", path, typ)
	}
	return b.Bytes, nil
}

// saveCert writes a node certificate and its key (key first: a crash in
// between leaves the old pair usable only if the key did not change, so
// both are written before either is trusted — load checks they match).
func saveCert(dir string, key *ecdsa.PrivateKey, certDER []byte) error {
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, fileKey+".new"), pemBlock("EC PRIVATE KEY", kd), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, fileCert+".new"), pemBlock("CERTIFICATE", certDER), 0o644); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, fileKey+".new"), filepath.Join(dir, fileKey)); err != nil {
		return err
	}
	return os.Rename(filepath.Join(dir, fileCert+".new"), filepath.Join(dir, fileCert))
}

// finishSave completes a saveCert that a crash interrupted after both new
// files were written: the new certificate pairs with the new key, which
// is still key.new or was already renamed. A new pair that does not match
// (a crash while writing it) is left aside and the old pair is used.
func finishSave(dir string) error {
	certNew := filepath.Join(dir, fileCert+".new")
	if _, err := os.Stat(certNew); err != nil {
		return nil
	}
	keyNew := filepath.Join(dir, fileKey+".new")
	if _, err := os.Stat(keyNew); err != nil {
		keyNew = filepath.Join(dir, fileKey) // renamed before the crash
	}
	if _, err := tls.LoadX509KeyPair(certNew, keyNew); err != nil {
		return nil
	}
	if keyNew != filepath.Join(dir, fileKey) {
		if err := os.Rename(keyNew, filepath.Join(dir, fileKey)); err != nil {
			return fmt.Errorf("finish an interrupted certificate renewal: %w", err)
		}
	}
	if err := os.Rename(certNew, filepath.Join(dir, fileCert)); err != nil {
		return fmt.Errorf("finish an interrupted certificate renewal: %w", err)
	}
	return nil
}

// loadCreds reads an upstream's credentials; os.ErrNotExist when it has
// not joined.
func loadCreds(dir string) (*creds, error) {
	if err := finishSave(dir); err != nil {
		return nil, err
	}
	caDER, err := readPEM(filepath.Join(dir, fileCA), "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fileCA, err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, fileCert), filepath.Join(dir, fileKey))
	if err != nil {
		return nil, err
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	meta, err := os.ReadFile(filepath.Join(dir, fileConsumer))
	if err != nil {
		return nil, err
	}
	c := &creds{cert: cert, leaf: leaf, ca: ca}
	if err := decodeConsumerMeta(meta, c); err != nil {
		return nil, fmt.Errorf("%s: %w", fileConsumer, err)
	}
	return c, nil
}

// Join tokens: "sj_" + 32 base32 characters of secret + "." + the base32
// SHA-256 of the consumer's CA certificate, which the joining provider
// pins on its first connection (before it has the CA).
const tokenPrefix = "sj_"

var b32 = newB32()

func newJoinToken(caDER []byte) (token string, secretHash []byte, err error) {
	var secret [20]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return "", nil, err
	}
	s := b32.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(s))
	return tokenPrefix + s + "." + b32.EncodeToString(fingerprint(caDER)), sum[:], nil
}

// parseJoinToken splits a token into the hash of its secret and the CA
// fingerprint it pins.
func parseJoinToken(token string) (secretHash, caFingerprint []byte, err error) {
	rest, ok := bytes.CutPrefix([]byte(token), []byte(tokenPrefix))
	if !ok {
		return nil, nil, fmt.Errorf("%w: not a join token (want %s...)", ErrBadToken, tokenPrefix)
	}
	secret, fp, ok := bytes.Cut(rest, []byte("."))
	if !ok || len(secret) != 32 {
		return nil, nil, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	if _, err := b32.DecodeString(string(secret)); err != nil {
		return nil, nil, fmt.Errorf("%w: malformed secret", ErrBadToken)
	}
	caFingerprint, err = b32.DecodeString(string(fp))
	if err != nil || len(caFingerprint) != sha256.Size {
		return nil, nil, fmt.Errorf("%w: malformed CA fingerprint", ErrBadToken)
	}
	sum := sha256.Sum256(secret)
	return sum[:], caFingerprint, nil
}
