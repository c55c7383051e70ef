package node

import (
	"crypto/x509"
	"path/filepath"

	"github.com/strata-dm/strata/internal/atomicfile"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/certs"
)

// The identity files of a node, relative to its folder: its CA (which
// signs device and peer certificates) and the API's server certificate
// (config.Default's api.tls_cert and api.tls_key).
const (
	CACertFile  = "tls/ca.crt"
	CAKeyFile   = "tls/ca.key"
	APICertFile = "tls/api.crt"
	APIKeyFile  = "tls/api.key"
)

// Identity is what WriteIdentity made.
type Identity struct {
	CAPEM      []byte            // the CA certificate clients trust
	APICert    *x509.Certificate // the API's server certificate
	AdminToken string            // the first admin's bearer token
}

// WriteIdentity gives the node called name in dir a new identity, as
// strata init does: a CA of its own, the API's server certificate for
// hosts (and this machine's loopback names), and the first admin's token
// in AdminTokenFile. Existing files are replaced.
func WriteIdentity(dir, name string, hosts ...string) (Identity, error) {
	ca, err := certs.NewCA(name + " CA")
	if err != nil {
		return Identity{}, err
	}
	api, err := ca.IssueServer(name, certs.ServerHosts(hosts...))
	if err != nil {
		return Identity{}, err
	}
	if err := ca.WriteFiles(filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)); err != nil {
		return Identity{}, err
	}
	if err := api.WriteFiles(filepath.Join(dir, APICertFile), filepath.Join(dir, APIKeyFile)); err != nil {
		return Identity{}, err
	}
	token, err := auth.NewTokenSecret()
	if err != nil {
		return Identity{}, err
	}
	// No trailing newline: the file holds exactly the token string.
	if err := writeSecretFile(filepath.Join(dir, AdminTokenFile), []byte(token)); err != nil {
		return Identity{}, err
	}
	return Identity{CAPEM: ca.CertPEM, APICert: api.Cert, AdminToken: token}, nil
}

// writeSecretFile replaces path with data, readable by its owner only.
func writeSecretFile(path string, data []byte) error { return atomicfile.Write(path, data, 0o600) }
