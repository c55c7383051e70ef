package sim

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/strata-dm/strata/apitypes"
)

// Credentials are what enrollment returns for one device (docs/mqtt.md,
// "Enrollment"), plus the hardware id it was enrolled with. A credentials
// file holds one such JSON object per line.
type Credentials struct {
	apitypes.Enrollment
	HardwareID string `json:"hardware_id,omitempty"`
}

// ErrBadCredentials is wrapped by errors about credential lines.
var ErrBadCredentials = errors.New("bad credentials")

// validate checks the fields the simulator needs.
func (c *Credentials) validate() error {
	if c.DeviceID == "" {
		return fmt.Errorf("%w: no device_id", ErrBadCredentials)
	}
	if c.MQTTPassword == "" {
		return fmt.Errorf("%w: device %s: no mqtt_password", ErrBadCredentials, c.DeviceID)
	}
	return nil
}

// topicPrefix is the device's topic root, "strata/<id>/".
func (c *Credentials) topicPrefix() string {
	if c.TopicPrefix != "" {
		return c.TopicPrefix
	}
	return "strata/" + c.DeviceID + "/"
}

// ReadCredentials reads JSON lines of Credentials. Blank lines are
// skipped; unknown keys are allowed (the enrollment response may grow).
// Identical strings that every device shares (CA, address, tenant, group)
// are stored once, which matters at 100,000 devices.
func ReadCredentials(r io.Reader) ([]Credentials, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	intern := map[string]string{}
	in := func(s string) string {
		if v, ok := intern[s]; ok {
			return v
		}
		intern[s] = s
		return s
	}
	var out []Credentials
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var c Credentials
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadCredentials, line, err)
		}
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		c.CAPEM, c.MQTTAddress = in(c.CAPEM), in(c.MQTTAddress)
		c.Tenant, c.Group = in(c.Tenant), in(c.Group)
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCredentials, err)
	}
	return out, nil
}

// WriteCredentials writes creds as JSON lines.
func WriteCredentials(w io.Writer, creds []Credentials) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range creds {
		if err := enc.Encode(&creds[i]); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// LoadCredentialsFile reads a credentials file (see ReadCredentials).
func LoadCredentialsFile(name string) ([]Credentials, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	creds, err := ReadCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return creds, nil
}

// SaveCredentialsFile writes creds to name (mode 0600: it holds secrets),
// through a temporary file renamed into place.
func SaveCredentialsFile(name string, creds []Credentials) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := WriteCredentials(f, creds); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, name)
}
