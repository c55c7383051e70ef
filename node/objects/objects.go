// Package objects is the node's object store (docs/software.md): the
// bytes of software artifacts, content-addressed by SHA-256, behind one
// small interface with two backends: a folder of the local file system
// (the default, under the node's data directory) and any S3-compatible
// service.
//
// The store holds bytes only. What they are (releases, their manifests
// and signatures) is durable state of the model; an object can always
// be uploaded or fetched again, and the store never decides what exists.
//
// Invariant: an object under key k has exactly the bytes whose SHA-256
// is k. Put verifies size and digest while it streams and never stores
// other bytes under k (on S3 the service checks the digest as well); a
// reader never sees a partial object.
package objects

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("object not found")
	// ErrDigest is a Put whose bytes do not have the size or the SHA-256
	// it was given.
	ErrDigest = errors.New("object content does not match its size or sha256")
	// ErrInvalidKey is a key that is not 64 lower-case hex digits.
	ErrInvalidKey = errors.New("object key must be a sha256 in lower-case hex")
)

// Info describes a stored object.
type Info struct {
	Key      string
	Size     int64
	Modified time.Time
}

// Store is an object store. Implementations are safe for concurrent use.
type Store interface {
	// Put stores the size bytes of r under key, the hex SHA-256 of
	// those bytes, or fails with ErrDigest (and stores nothing) when r
	// holds other bytes. Putting an object that exists is not an error.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Get reads length bytes of the object from offset (length < 0: to
	// its end). The caller closes the reader.
	Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
	// Stat returns the object's Info, or ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes the object; a missing one is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every object, in key order, until fn fails.
	List(ctx context.Context, fn func(Info) error) error
	// Close releases the store's resources.
	Close() error
}

// FilePutter is implemented by a Store that takes a whole file as an
// object without copying its bytes (the fs backend renames it into
// place). PutFile verifies that the file at path holds size bytes whose
// SHA-256 is key (ErrDigest otherwise, the file left where it is), then
// makes it object key: path no longer exists once it succeeds. The
// caller has synced the file and changes it no more. Callers use it by
// type assertion and Put the file's bytes otherwise.
type FilePutter interface {
	PutFile(ctx context.Context, key, path string, size int64) error
}

// CheckKey returns ErrInvalidKey unless key is 64 lower-case hex digits.
func CheckKey(key string) error {
	if len(key) != 64 {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: %q", ErrInvalidKey, key)
		}
	}
	return nil
}

// verifier reads exactly size bytes from r while hashing them; its last
// Read (the one that returns io.EOF) fails with ErrDigest instead when
// the bytes were more, fewer or other than expected, so that a backend
// streaming from it aborts before the object becomes visible.
type verifier struct {
	r    io.Reader
	key  string
	size int64
	n    int64
	h    hash.Hash
	err  error
}

func newVerifier(r io.Reader, key string, size int64) *verifier {
	// One byte more than size, to see a longer stream.
	return &verifier{r: io.LimitReader(r, size+1), key: key, size: size, h: sha256.New()}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	if v.n+int64(n) > v.size {
		// Withheld: the reader never gets more than size bytes.
		v.err = fmt.Errorf("%w: more than %d bytes", ErrDigest, v.size)
		return 0, v.err
	}
	v.n += int64(n)
	v.h.Write(p[:n])
	if v.n == v.size && n > 0 {
		// The last bytes are handed on only if the digest holds, so a
		// backend that stops reading at size never stores other bytes.
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.key {
			v.err = fmt.Errorf("%w: sha256 %s, want %s", ErrDigest, got, v.key)
			return 0, v.err
		}
	}
	if errors.Is(err, io.EOF) {
		v.err = v.check()
		if !errors.Is(v.err, io.EOF) {
			return 0, v.err
		}
	}
	return n, err
}

// check compares what was read with size and key.
func (v *verifier) check() error {
	if v.n != v.size {
		return fmt.Errorf("%w: %d bytes, want %d", ErrDigest, v.n, v.size)
	}
	if got := hex.EncodeToString(v.h.Sum(nil)); got != v.key {
		return fmt.Errorf("%w: sha256 %s, want %s", ErrDigest, got, v.key)
	}
	return io.EOF
}

// done reads r to its end (checking it) after a backend's copy stopped
// early, e.g. at exactly size bytes; nil when r was complete and right.
func (v *verifier) done() error {
	if v.err == nil {
		_, v.err = io.Copy(io.Discard, readerFunc(v.Read))
		if v.err == nil {
			v.err = io.EOF
		}
	}
	if errors.Is(v.err, io.EOF) {
		return nil
	}
	return v.err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
