package auth

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestFailureLimiterPerIdentity: one identity failing from an address
// blocks only that identity there; other identities from the address,
// and the identity from elsewhere, pass, until the address's failures
// across identities reach AddrFactor times the limit.
func TestFailureLimiterPerIdentity(t *testing.T) {
	const max = 3
	f := NewFailureLimiter(max, time.Minute)
	now := time.Unix(1_000_000, 0)
	f.now = func() time.Time { return now }
	const nat = "203.0.113.7:40000"
	for range max {
		if _, err := f.Check("d-revoked", nat); err != nil {
			t.Fatal(err)
		}
		f.Fail("d-revoked", nat)
	}
	limit, err := f.Check("d-revoked", nat)
	var rl *RateLimitError
	if !errors.As(err, &rl) || !errors.Is(err, ErrRateLimited) || limit != LimitIdentity || rl.RetryAfter != time.Minute {
		t.Fatalf("the failing identity: %v, %v", limit, err)
	}
	if _, err := f.Check("d-good", "203.0.113.7:40001"); err != nil {
		t.Fatalf("another identity behind the address: %v", err)
	}
	if _, err := f.Check("d-revoked", "198.51.100.1:1"); err != nil {
		t.Fatalf("the identity from another address: %v", err)
	}
	// Guessing across identities: the address is blocked as a whole.
	for i := range AddrFactor*max - max {
		f.Fail(fmt.Sprintf("d-%d", i), nat)
	}
	if limit, err := f.Check("d-good", nat); err == nil || limit != LimitAddress {
		t.Fatalf("an address failing across identities: %v, %v", limit, err)
	}
	// The window slides.
	now = now.Add(time.Minute)
	if _, err := f.Check("d-revoked", nat); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	// Identities are bounded in the key.
	long := strings.Repeat("x", 10_000)
	if k := pairKey(long, nat); len(k) > maxIdentityKey+80 {
		t.Fatalf("key of %d bytes", len(k))
	}
}
