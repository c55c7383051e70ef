package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/internal/atomicfile"
)

// Files of the state directory. Everything the agent must remember across
// restarts lives there; see docs/agent.md for the layout.
const (
	credentialsFile = "credentials.json" // enrollment response, mode 0600
	configFile      = "config.json"      // settings changed by set-config
	queueFile       = "queue.log"        // outbound messages not yet acknowledged
	queueHeadFile   = "queue.head"       // first sequence number still owed
	jobsFile        = "jobs.log"         // job ids run, for at-most-once
	// software.json, downloads/ and packages/: see install.go.
	lockFile = "agent.lock" // held by the running agent
)

// ErrNotEnrolled is returned when the state directory holds no credentials.
var ErrNotEnrolled = errors.New("not enrolled: no credentials in the state directory")

// Credentials are what enrollment returns and the agent needs to connect:
// the POST /api/v1/enroll response (docs/mqtt.md), kept as it came, and
// the API URL it was sent to (where artifacts are downloaded from).
type Credentials struct {
	apitypes.Enrollment
	API string `json:"api,omitempty"`
}

// Validate checks that c is usable to connect: a device id that is a valid
// topic segment, a HOST:PORT address, a parseable CA and a sane prefix.
func (c *Credentials) Validate() error {
	if err := validTopicSegment(c.DeviceID); err != nil {
		return fmt.Errorf("device_id: %w", err)
	}
	if _, _, err := net.SplitHostPort(c.MQTTAddress); err != nil {
		return fmt.Errorf("mqtt_address %q: %w", c.MQTTAddress, err)
	}
	if c.CAPEM != "" {
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(c.CAPEM)) {
			return errors.New("ca_pem: no certificate found")
		}
	}
	if p := c.TopicPrefix; p != "" {
		if !strings.HasSuffix(p, "/") || strings.ContainsAny(p, "+#\x00") {
			return fmt.Errorf("topic_prefix %q: must end with / and hold no wildcard", p)
		}
	}
	return nil
}

// Prefix is the topic prefix of the device: topic_prefix from enrollment,
// else strata/<device id>/.
func (c *Credentials) Prefix() string {
	if c.TopicPrefix != "" {
		return c.TopicPrefix
	}
	return "strata/" + c.DeviceID + "/"
}

// LoadCredentials reads DIR/credentials.json. It returns ErrNotEnrolled
// (wrapped) when the file does not exist.
func LoadCredentials(dir string) (*Credentials, error) {
	data, err := os.ReadFile(filepath.Join(dir, credentialsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s)", ErrNotEnrolled, dir)
	}
	if err != nil {
		return nil, err
	}
	var c Credentials
	if err := strictUnmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", credentialsFile, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", credentialsFile, err)
	}
	return &c, nil
}

// SaveCredentials writes c to DIR/credentials.json with mode 0600, atomically:
// a crash leaves either the previous credentials or the new ones.
func SaveCredentials(dir string, c *Credentials) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, credentialsFile), append(data, '\n'), 0o600)
}

// syncDir makes a rename or a file creation in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// strictUnmarshal decodes one JSON value into v, refusing unknown keys and
// trailing data: a typo in a file the agent owns is an error, not a default.
func strictUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

// validTopicSegment accepts a non-empty, valid UTF-8 string of at most 128
// bytes that can stand as one MQTT topic level and one word of a state file:
// no '/', '+', '#', whitespace or control characters.
func validTopicSegment(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 128 {
		return errors.New("longer than 128 bytes")
	}
	for _, r := range s {
		switch {
		case r == '/' || r == '+' || r == '#':
			return fmt.Errorf("%q holds %q", s, r)
		case r <= ' ' || r == 0x7f || r == 0xfffd:
			return fmt.Errorf("%q holds a space, control or invalid character", s)
		}
	}
	return nil
}
