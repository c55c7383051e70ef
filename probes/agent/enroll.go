package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
)

// EnrollRequest is what Enroll needs: the node's API base URL
// (https://HOST:PORT), an enrollment token and the device's hardware id.
type EnrollRequest struct {
	API        string
	Token      string
	HardwareID string
	// CAPEM is trusted for the HTTPS call (the node CA, tls/ca.crt on the
	// node); nil trusts the system roots.
	CAPEM []byte
	// Timeout bounds the whole exchange (default 30s).
	Timeout time.Duration
}

// APIError is an error answer of the node's API: its HTTP status and the
// body {"error": "...", "code": "..."}.
type APIError struct {
	StatusCode int
	Code       string
	Message    string
}

// Error says what the node answered: status, code and message.
func (e *APIError) Error() string {
	msg := fmt.Sprintf("enrollment refused: HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Code != "" {
		msg += " (" + e.Code + ")"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

const maxEnrollResponse = 1 << 20

// Enroll exchanges an enrollment token for the device's credentials over
// HTTPS: POST {API}/api/v1/enroll {"token", "hardware_id"}. It does not save
// them; see SaveCredentials. An error answer of the node is an *APIError.
func Enroll(ctx context.Context, req EnrollRequest) (*Credentials, error) {
	u, err := url.Parse(req.API)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("api %q: want https://HOST:PORT", req.API)
	}
	if req.Token == "" {
		return nil, errors.New("enrollment token is required")
	}
	if req.HardwareID == "" {
		return nil, errors.New("hardware id is required")
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(req.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(req.CAPEM) {
			return nil, errors.New("ca: no PEM certificate found")
		}
		tlsConf.RootCAs = pool
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}}
	defer client.CloseIdleConnections()

	body, _ := json.Marshal(apitypes.EnrollRequest{Token: req.Token, HardwareID: req.HardwareID})
	endpoint := strings.TrimRight(u.String(), "/") + "/api/v1/enroll"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("enroll: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEnrollResponse))
	if err != nil {
		return nil, fmt.Errorf("enroll: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		apiErr := &APIError{StatusCode: resp.StatusCode}
		var eb apitypes.ErrorBody
		if json.Unmarshal(data, &eb) == nil && (eb.Message != "" || eb.Code != "") {
			apiErr.Message, apiErr.Code = eb.Message, eb.Code
		} else {
			apiErr.Message = strings.TrimSpace(string(data[:min(len(data), 512)]))
		}
		return nil, apiErr
	}
	// Unknown keys are tolerated: a newer node may answer more (cert_pem).
	var c Credentials
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("enroll: bad answer: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("enroll: bad answer: %w", err)
	}
	c.API = strings.TrimRight(u.String(), "/")
	return &c, nil
}

// HardwareID returns a stable identifier of this machine: the content of
// /etc/machine-id, else the MAC address of the first non-loopback
// interface, else the hostname.
func HardwareID() (string, error) {
	return hardwareID("/etc/machine-id", net.Interfaces)
}

func hardwareID(machineIDPath string, interfaces func() ([]net.Interface, error)) (string, error) {
	if data, err := os.ReadFile(machineIDPath); err == nil {
		if id := strings.TrimSpace(string(data)); id != "" {
			return id, nil
		}
	}
	if ifs, err := interfaces(); err == nil {
		slices.SortFunc(ifs, func(a, b net.Interface) int { return a.Index - b.Index })
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagLoopback == 0 && len(ifc.HardwareAddr) > 0 &&
				!bytes.Equal(ifc.HardwareAddr, make([]byte, len(ifc.HardwareAddr))) {
				return ifc.HardwareAddr.String(), nil
			}
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "", errors.New("no hardware id: no /etc/machine-id, MAC address or hostname")
	}
	return host, nil
}
