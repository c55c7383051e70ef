package auth

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"strings"
)

// Token strings are
//
//	st_<id>_<secret>
//
// where id is 16 random bytes and secret 32 random bytes, both in unpadded
// lower-case base32 ([a-z2-7], never "_"), so the string has a fixed length
// of 82 and splits in exactly one way. The id is public (it names the token
// in listings and logs); the secret is 256 bits of entropy. Only
// SHA-256(whole string) is stored: a slow hash adds nothing at that entropy.
const (
	tokenPrefix    = "st_"
	tokenIDBytes   = 16
	tokenSecBytes  = 32
	tokenIDChars   = 26 // ceil(16*8/5)
	tokenSecChars  = 52 // ceil(32*8/5)
	tokenStringLen = len(tokenPrefix) + tokenIDChars + 1 + tokenSecChars
)

// b32 encodes ids and secrets. Its decoder tolerates newlines and non-zero
// trailing bits, so validB32 also insists on the canonical spelling.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

var errMalformedToken = errors.New("malformed token")

// NewTokenSecret returns a fresh token string. strata init uses it to write
// the admin token before the node first runs; Bootstrap then stores it.
func NewTokenSecret() (string, error) {
	return tokenPrefix + b32.EncodeToString(randomBytes(tokenIDBytes)) + "_" +
		b32.EncodeToString(randomBytes(tokenSecBytes)), nil
}

// parseToken checks the shape of a token string and returns its id. It
// accepts exactly the strings NewTokenSecret can produce.
func parseToken(s string) (id string, err error) {
	if len(s) != tokenStringLen || !strings.HasPrefix(s, tokenPrefix) || s[len(tokenPrefix)+tokenIDChars] != '_' {
		return "", errMalformedToken
	}
	id = s[len(tokenPrefix) : len(tokenPrefix)+tokenIDChars]
	secret := s[len(tokenPrefix)+tokenIDChars+1:]
	if !validB32(id, tokenIDBytes) || !validB32(secret, tokenSecBytes) {
		return "", errMalformedToken
	}
	return id, nil
}

// validTokenID reports whether id has the shape of a token id.
func validTokenID(id string) bool { return len(id) == tokenIDChars && validB32(id, tokenIDBytes) }

// validB32 reports whether s is the canonical encoding of n bytes, so that
// every id and secret has exactly one spelling.
func validB32(s string, n int) bool {
	b, err := b32.DecodeString(s)
	return err == nil && len(b) == n && b32.EncodeToString(b) == s
}

// tokenHash is the stored form of a token string.
func tokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// NewSecret returns a fresh secret string shaped like an API token but with
// another prefix (e.g. "se_" for enrollment tokens, "sd_" for device
// secrets): prefix, a public id, "_", 256 bits of secret.
func NewSecret(prefix string) (s, id string) {
	id = b32.EncodeToString(randomBytes(tokenIDBytes))
	return prefix + id + "_" + b32.EncodeToString(randomBytes(tokenSecBytes)), id
}

// ParseSecret checks that s has the shape NewSecret(prefix) produces and
// returns its id.
func ParseSecret(prefix, s string) (id string, err error) {
	if !strings.HasPrefix(s, prefix) {
		return "", errMalformedToken
	}
	return parseToken(tokenPrefix + s[len(prefix):])
}

// SecretHash is the stored form of a secret string (hex SHA-256).
func SecretHash(s string) string { return tokenHash(s) }
