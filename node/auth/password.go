package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Password limits (bytes).
const (
	MinPasswordLen = 8
	MaxPasswordLen = 256
)

// argon2id parameters for new hashes; memory comes from Config.
const (
	argonTime    = 1
	argonThreads = 2
	saltLen      = 16
	keyLen       = 32

	minMemoryKiB = 8 * argonThreads // argon2 needs 8 KiB per lane
	maxMemoryKiB = 2 << 20          // 2 GiB: a bound on what a stored hash may ask for
	maxTime      = 64
)

// argonParams are argon2id's cost parameters.
type argonParams struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
}

// passwordHash is a decoded PHC string:
//
//	$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<key>
//
// with salt and key in unpadded standard base64. The encoding is canonical:
// parseHash accepts exactly what String produces, so the parameters travel
// with every hash and can change for new hashes without breaking old ones.
type passwordHash struct {
	params argonParams
	salt   []byte
	key    []byte
}

func (h passwordHash) String() string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		h.params.memory, h.params.time, h.params.threads,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}

var b64 = base64.RawStdEncoding.Strict()

var errBadHash = errors.New("malformed password hash")

// parseHash decodes a stored PHC string, bounding every parameter so that a
// corrupt record cannot make a login allocate unbounded memory or time.
func parseHash(s string) (passwordHash, error) {
	var h passwordHash
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != "v="+strconv.Itoa(argon2.Version) {
		return h, errBadHash
	}
	var m, t, p uint64
	ps := strings.Split(f[3], ",")
	if len(ps) != 3 {
		return h, errBadHash
	}
	for i, spec := range []struct {
		name string
		v    *uint64
		max  uint64
	}{{"m", &m, maxMemoryKiB}, {"t", &t, maxTime}, {"p", &p, 255}} {
		val, ok := strings.CutPrefix(ps[i], spec.name+"=")
		if !ok {
			return h, errBadHash
		}
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil || n < 1 || n > spec.max || strconv.FormatUint(n, 10) != val {
			return h, errBadHash
		}
		*spec.v = n
	}
	if m < minMemoryKiB || m < 8*p {
		return h, errBadHash
	}
	// The decoder skips newlines even when strict: compare re-encodings.
	salt, err := b64.DecodeString(f[4])
	if err != nil || len(salt) < 8 || len(salt) > 64 || b64.EncodeToString(salt) != f[4] {
		return h, errBadHash
	}
	key, err := b64.DecodeString(f[5])
	if err != nil || len(key) < 16 || len(key) > 64 || b64.EncodeToString(key) != f[5] {
		return h, errBadHash
	}
	h.params = argonParams{memory: uint32(m), time: uint32(t), threads: uint8(p)}
	h.salt, h.key = salt, key
	return h, nil
}

// matches reports in constant time whether password hashes to h.
func (h passwordHash) matches(password string) bool {
	k := argon2.IDKey([]byte(password), h.salt, h.params.time, h.params.memory, h.params.threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(k, h.key) == 1
}

// hasher hashes and verifies passwords with bounded concurrency: each hash
// takes params.memory KiB, so at most cap(sem) run at once.
type hasher struct {
	params argonParams
	sem    chan struct{}
	// dummy has the current parameters and a random key no password
	// yields; verifying against it costs what a real check costs, so a
	// missing user or a user without a password answers in the same time.
	dummy passwordHash
}

func newHasher(p argonParams, concurrency int) *hasher {
	return &hasher{
		params: p,
		sem:    make(chan struct{}, concurrency),
		dummy:  passwordHash{params: p, salt: randomBytes(saltLen), key: randomBytes(keyLen)},
	}
}

func (h *hasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *hasher) release() { <-h.sem }

// hash returns the PHC string of password with a fresh salt.
func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	ph := passwordHash{params: h.params, salt: randomBytes(saltLen)}
	ph.key = argon2.IDKey([]byte(password), ph.salt, h.params.time, h.params.memory, h.params.threads, keyLen)
	return ph.String(), nil
}

// verify reports whether password matches the stored hash encoded, and
// whether that hash uses other parameters than new hashes do (so a caller
// may rehash it). An empty or malformed hash is checked against the dummy
// and never matches; a malformed one also returns errBadHash. Only a
// context error ends the wait for a hashing slot early.
func (h *hasher) verify(ctx context.Context, encoded, password string) (ok, stale bool, err error) {
	ph, perr := h.dummy, error(nil)
	if encoded != "" {
		if p, e := parseHash(encoded); e == nil {
			ph = p
		} else {
			perr = e
		}
	}
	if err := h.acquire(ctx); err != nil {
		return false, false, err
	}
	defer h.release()
	ok = ph.matches(password)
	if encoded == "" || perr != nil {
		return false, false, perr
	}
	return ok, ph.params != h.params || len(ph.key) != keyLen, nil
}

func validPassword(pw string) error {
	if len(pw) < MinPasswordLen || len(pw) > MaxPasswordLen {
		return invalid("password must be %d to %d bytes", MinPasswordLen, MaxPasswordLen)
	}
	return nil
}

// randomBytes returns n bytes from crypto/rand, which never fails on
// supported platforms (it crashes the program rather than return short).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func randomHex(n int) string { return fmt.Sprintf("%x", randomBytes(n)) }
