// Package certs makes and loads the node's TLS material: a self-signed CA,
// server certificates it signs (ECDSA P-256), PEM files on disk, and the
// tls.Config values servers and clients use.
//
// Keys are written PKCS #8 with mode 0600; certificates with mode 0644.
// Files are replaced atomically (write to a temporary file, then rename), so
// a reader never sees half a key.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Validity periods of what this package issues.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	// backdate tolerates clocks a little behind the issuer's.
	backdate = 5 * time.Minute
)

// Pair is a certificate with its private key, parsed and as PEM.
type Pair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed certificate authority valid for CAValidity.
func NewCA(commonName string) (*Pair, error) {
	return newCA(commonName, time.Now())
}

func newCA(commonName string, now time.Time) (*Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Strata"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: create CA certificate: %w", err)
	}
	return newPair(der, key)
}

// IssueServer signs a server certificate for exactly the given hosts (DNS
// names or IP addresses; see ServerHosts for the usual set), valid for
// ServerValidity but never beyond the CA itself.
func (ca *Pair) IssueServer(commonName string, hosts []string) (*Pair, error) {
	return ca.issueServer(commonName, hosts, time.Now())
}

func (ca *Pair) issueServer(commonName string, hosts []string, now time.Time) (*Pair, error) {
	if err := ca.canSign(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, errors.New("certs: a server certificate needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate server key: %w", err)
	}
	tmpl, err := ca.leaf(commonName, now, ServerValidity, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	addHosts(tmpl, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: create server certificate: %w", err)
	}
	return newPair(der, key)
}

// ReplicaUnit is the organizational unit of a replica certificate
// (IssueReplica). Only a certificate carrying it, signed by the node's
// CA, may speak on the replicas' channel: a device or peer certificate
// the same CA signed may not.
const ReplicaUnit = "strata replica"

// IssueReplica signs the certificate a replica of a cluster presents to
// the others, as server and as client, for exactly the given hosts.
func (ca *Pair) IssueReplica(id string, hosts []string) (*Pair, error) {
	if err := ca.canSign(); err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, errors.New("certs: a replica certificate needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: generate replica key: %w", err)
	}
	tmpl, err := ca.leaf(id, time.Now(), ServerValidity, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	tmpl.Subject.OrganizationalUnit = []string{ReplicaUnit}
	addHosts(tmpl, hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certs: create replica certificate: %w", err)
	}
	return newPair(der, key)
}

// canSign reports why ca cannot sign certificates, if it cannot.
func (ca *Pair) canSign() error {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return errors.New("certs: no CA to sign with")
	}
	if !ca.Cert.IsCA {
		return errors.New("certs: signing certificate is not a CA")
	}
	return nil
}

// leaf is the template of a certificate ca issues to commonName from now,
// valid for validity but never beyond the CA, for one extended usage.
func (ca *Pair) leaf(commonName string, now time.Time, validity time.Duration, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"Strata"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}, nil
}

// ServerHosts is the usual host list of a node's server certificate:
// localhost, 127.0.0.1, ::1, this machine's host name, then extra. Empty
// and wildcard hosts (0.0.0.0, ::) are skipped, duplicates removed and
// brackets around IPv6 addresses stripped.
func ServerHosts(extra ...string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	hosts = append(hosts, extra...)
	seen := make(map[string]bool, len(hosts))
	out := hosts[:0:0]
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]")
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsUnspecified() {
				continue
			}
			h = ip.String()
		} else {
			h = strings.ToLower(h)
		}
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		out = append(out, h)
	}
	return out
}

// WriteFiles writes the certificate (mode 0644) and the key (mode 0600),
// creating their folders (mode 0755) as needed.
func (p *Pair) WriteFiles(certFile, keyFile string) error {
	if err := writeFile(certFile, p.CertPEM, 0o644); err != nil {
		return err
	}
	return writeFile(keyFile, p.KeyPEM, 0o600)
}

// TLSCertificate returns the pair as a tls.Certificate.
func (p *Pair) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(p.CertPEM, p.KeyPEM)
}

// LoadPair reads a certificate and its key from PEM files. The key may be
// PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) and must match the certificate.
func LoadPair(certFile, keyFile string) (*Pair, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return ParsePair(certPEM, keyPEM)
}

// ParsePair parses a PEM certificate (the first of a chain) and its key.
func ParsePair(certPEM, keyPEM []byte) (*Pair, error) {
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	signer, ok := tc.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: key of type %T cannot sign", tc.PrivateKey)
	}
	leaf := tc.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(tc.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
	}
	return &Pair{Cert: leaf, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ServerConfig returns a server tls.Config serving the pair in certFile and
// keyFile, with TLS 1.2 as the minimum version.
func ServerConfig(certFile, keyFile string) (*tls.Config, error) {
	tc, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return ServerConfigFor(tc), nil
}

// ServerConfigFor returns a server tls.Config serving cert, with TLS 1.2
// as the minimum version.
func ServerConfigFor(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
}

// ClientConfig returns a client tls.Config (TLS 1.2 minimum) trusting only
// the certificates in caPEM, or the system roots when caPEM is nil.
func ClientConfig(caPEM []byte) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caPEM == nil {
		return cfg, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("certs: no certificate found in the CA PEM")
	}
	cfg.RootCAs = pool
	return cfg, nil
}

func newPair(der []byte, key *ecdsa.PrivateKey) (*Pair, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return &Pair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

// writeFile replaces path atomically with data at the given mode.
func writeFile(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	ok = true
	return nil
}

// ClientValidity is how long a client certificate signed from a CSR lasts.
const ClientValidity = 365 * 24 * time.Hour

// SignClientCSR signs a client-authentication certificate for the public
// key of a PEM certificate request, with commonName as its subject (the
// request's own subject is ignored: the CA decides who the holder is),
// valid for ClientValidity but never beyond the CA. It returns the
// certificate as PEM and parsed.
func (ca *Pair) SignClientCSR(csrPEM []byte, commonName string) ([]byte, *x509.Certificate, error) {
	if err := ca.canSign(); err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, nil, errors.New("certs: no PEM CERTIFICATE REQUEST block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("certs: certificate request signature: %w", err)
	}
	tmpl, err := ca.leaf(commonName, time.Now(), ClientValidity, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create client certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}

// addHosts names hosts in tmpl: IP addresses as such, the rest as DNS
// names.
func addHosts(tmpl *x509.Certificate, hosts []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
}
