package sim

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// network holds what devices dial with: one dialer per source address
// and TLS configurations shared by every device trusting the same CA.
type network struct {
	dialers []*net.Dialer
	caPEM   []byte // Config.CAPEM, trusted besides each device's ca_pem
	plain   bool

	mu   sync.Mutex
	tlsC map[[2]string]*tls.Config // by device CA PEM and server name
}

func newNetwork(cfg *Config) *network {
	n := &network{caPEM: cfg.CAPEM, plain: cfg.Plain, tlsC: map[[2]string]*tls.Config{}}
	n.dialers = dialers(cfg.SourceAddrs, cfg.ConnectTimeout)
	return n
}

// dialers returns a dialer per source address, or one default dialer.
func dialers(addrs []netip.Addr, timeout time.Duration) []*net.Dialer {
	if len(addrs) == 0 {
		return []*net.Dialer{{Timeout: timeout, KeepAlive: -1}}
	}
	out := make([]*net.Dialer, len(addrs))
	for i, a := range addrs {
		out[i] = &net.Dialer{
			Timeout:   timeout,
			KeepAlive: -1, // MQTT keepalive is enough; saves a timer per socket
			LocalAddr: &net.TCPAddr{IP: a.AsSlice()},
			Control:   bindNoPort,
		}
	}
	return out
}

// dialer returns the dialer of device i.
func (n *network) dialer(i int) *net.Dialer { return n.dialers[i%len(n.dialers)] }

// rootPool returns a pool of the given PEM blocks, or nil (system roots)
// when there are none.
func rootPool(pems ...[]byte) (*x509.CertPool, error) {
	var pool *x509.CertPool
	for _, p := range pems {
		if len(p) == 0 {
			continue
		}
		if pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(p) {
			return nil, errors.New("no certificate in CA PEM")
		}
	}
	return pool, nil
}

// tlsFor returns the TLS configuration for a device trusting caPEM (its
// enrollment's ca_pem) that connects to addr; nil in plain mode.
func (n *network) tlsFor(caPEM, addr string) (*tls.Config, error) {
	if n.plain {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt address %q: %w", addr, err)
	}
	key := [2]string{caPEM, host}
	n.mu.Lock()
	defer n.mu.Unlock()
	if c, ok := n.tlsC[key]; ok {
		return c, nil
	}
	pool, err := rootPool(n.caPEM, []byte(caPEM))
	if err != nil {
		return nil, err
	}
	c := &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
	n.tlsC[key] = c
	return c, nil
}

// apiTLS is the TLS configuration of enrollment requests.
func (n *network) apiTLS() (*tls.Config, error) {
	pool, err := rootPool(n.caPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
