package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/dustin/go-humanize"
)

// Object store kinds.
const (
	ObjectsFS = "fs" // a folder of the local file system (the default)
	ObjectsS3 = "s3" // an S3-compatible bucket
)

// Objects is the object store holding artifacts' bytes
// (docs/software.md).
type Objects struct {
	Kind string `yaml:"kind"` // ObjectsFS (default) or ObjectsS3
	// Dir is kind fs's folder; default "objects" in data_dir.
	Dir string `yaml:"dir"`
	// Endpoint (a URL; empty: AWS), Bucket, Region (default us-east-1),
	// PathStyle and Prefix (put before every key) are kind s3's.
	Endpoint  string `yaml:"endpoint"`
	Bucket    string `yaml:"bucket"`
	Region    string `yaml:"region"`
	PathStyle bool   `yaml:"path_style"`
	Prefix    string `yaml:"prefix"`
	// AccessKey and the secret key, read from SecretKeyFile, are kind
	// s3's credentials. STRATA_OBJECTS_ACCESS_KEY and
	// STRATA_OBJECTS_SECRET_KEY override them, so that neither need be
	// in a file.
	AccessKey     string `yaml:"access_key"`
	SecretKeyFile string `yaml:"secret_key_file"`
	SecretKey     string `yaml:"-"`
}

// Software configures releases (docs/software.md).
type Software struct {
	// TrustedKeys are the Ed25519 public keys release manifests must be
	// signed with: each the base64 of the 32-byte key, or a file holding
	// it (as "strata ctl releases keygen" writes NAME.pub). Several keys
	// allow a rotation; none: releases cannot be created.
	TrustedKeys []string `yaml:"trusted_keys"`
	// CacheBudget bounds the bytes of artifacts fetched from the tier
	// above kept in the object store ("20GiB"; empty: no bound): past
	// it, the least recently used that no active rollout or staging
	// needs are removed.
	CacheBudget string `yaml:"cache_budget"`
}

// CacheBudgetBytes returns software.cache_budget in bytes (0: none).
func (s Software) CacheBudgetBytes() (int64, error) {
	if s.CacheBudget == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(s.CacheBudget)
	if err != nil || n > 1<<60 {
		return 0, fmt.Errorf("software.cache_budget %q: want a size such as 20GiB", s.CacheBudget)
	}
	return int64(n), nil
}

func (o *Objects) validate() error {
	switch o.Kind {
	case ObjectsFS:
		if o.Endpoint != "" || o.Bucket != "" || o.AccessKey != "" || o.SecretKeyFile != "" || o.Prefix != "" {
			return errors.New("objects.endpoint, bucket, access_key, secret_key_file and prefix need objects.kind s3 (the store is fs)")
		}
	case ObjectsS3:
		if o.Bucket == "" {
			return errors.New("objects.bucket is required with objects.kind s3")
		}
		if o.Dir != "" {
			return errors.New("objects.dir is for objects.kind fs")
		}
		if o.Endpoint != "" {
			u, err := url.Parse(o.Endpoint)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return fmt.Errorf("objects.endpoint %q: want http(s)://host[:port]", o.Endpoint)
			}
		}
		if o.AccessKey == "" || (o.SecretKeyFile == "" && o.SecretKey == "") {
			return errors.New("objects.kind s3 needs objects.access_key and objects.secret_key_file (or STRATA_OBJECTS_ACCESS_KEY and STRATA_OBJECTS_SECRET_KEY)")
		}
	default:
		return fmt.Errorf("objects.kind: %q is not one of fs, s3", o.Kind)
	}
	return nil
}

// ObjectsSecret returns kind s3's secret key: STRATA_OBJECTS_SECRET_KEY,
// else the content of objects.secret_key_file.
func (c *Config) ObjectsSecret() (string, error) {
	if c.Objects.SecretKey != "" {
		return c.Objects.SecretKey, nil
	}
	b, err := os.ReadFile(c.Path(c.Objects.SecretKeyFile))
	if err != nil {
		return "", fmt.Errorf("objects.secret_key_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// TrustedKeys parses software.trusted_keys: each entry is the base64 of
// an Ed25519 public key, or a file (relative to the config's folder)
// holding one.
func (c *Config) TrustedKeys() ([]ed25519.PublicKey, error) {
	var out []ed25519.PublicKey
	for i, k := range c.Software.TrustedKeys {
		text := strings.TrimSpace(k)
		if b, err := base64.StdEncoding.DecodeString(text); err != nil || len(b) != ed25519.PublicKeySize {
			data, ferr := os.ReadFile(c.Path(text))
			if ferr != nil {
				return nil, fmt.Errorf("software.trusted_keys[%d]: neither the base64 of a %d-byte Ed25519 key nor a readable file: %v",
					i, ed25519.PublicKeySize, ferr)
			}
			text = strings.TrimSpace(string(data))
		}
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("software.trusted_keys[%d]: want the base64 of a %d-byte Ed25519 public key", i, ed25519.PublicKeySize)
		}
		out = append(out, ed25519.PublicKey(b))
	}
	return out, nil
}
