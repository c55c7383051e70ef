package federation

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Certificate renewal, provider side: when a third of its node
// certificate's lifetime is left, the provider sends renew {csr} on the
// control stream and waits for renewed {cert}. Every failure (no answer,
// a refusal, a certificate that does not verify or does not match the
// key, a request that cannot be made or sent, a write to disk that
// fails) is retried on the same link with backoff, and a new link starts
// from scratch: renewal never stalls for good.

// Clock is the time source of renewal; tests use a fake one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Renewal timing: an answer is awaited for renewAnswer, and a failed
// attempt is retried after renewBackoffMin, doubling up to
// renewBackoffMax; both are also bounded by a tenth of the certificate's
// lifetime (certificates can be short-lived).
const (
	renewAnswer     = 30 * time.Second
	renewBackoffMin = 5 * time.Second
	renewBackoffMax = 10 * time.Minute
)

// renewal is one connection's renewal state.
type renewal struct {
	mu       sync.Mutex
	key      *ecdsa.PrivateKey // of the request awaiting an answer; nil when none
	sent     time.Time
	failures int
	next     time.Time // no attempt before this
}

func lifetime(leaf *x509.Certificate) time.Duration {
	return leaf.NotAfter.Sub(leaf.NotBefore)
}

// bounded limits d to a tenth of the lifetime, and to at least 100 ms.
func bounded(d, life time.Duration) time.Duration {
	return max(min(d, life/10), 100*time.Millisecond)
}

// failed records a failed attempt: the next one waits a backoff.
// Called with r.mu held.
func (r *renewal) failed(now time.Time, life time.Duration) time.Duration {
	r.key = nil
	r.failures++
	d := renewBackoffMin << min(r.failures-1, 16)
	d = bounded(min(d, renewBackoffMax), life)
	r.next = now.Add(d)
	return d
}

// maybeRenew starts a renewal when one is due and none is awaiting an
// answer (or the one awaiting has had no answer for too long).
func (u *upstream) maybeRenew(r *renewal, cr *creds) {
	s := u.s
	now := s.clock.Now()
	u.mu.Lock()
	leaf, fw := u.leaf, u.control
	u.mu.Unlock()
	life := lifetime(leaf)
	if leaf.NotAfter.Sub(now) > life/3 || fw == nil {
		return
	}
	r.mu.Lock()
	if r.key != nil {
		if now.Sub(r.sent) < bounded(renewAnswer, life) {
			r.mu.Unlock()
			return
		}
		d := r.failed(now, life)
		r.mu.Unlock()
		s.log.Warn("federation: no answer to a certificate renewal; retrying", "consumer", cr.consumer, "in", d)
		r.mu.Lock()
	}
	if now.Before(r.next) {
		r.mu.Unlock()
		return
	}
	key, csr, err := newCSR(s.cfg.Name)
	if err != nil {
		d := r.failed(now, life)
		r.mu.Unlock()
		s.log.Warn("federation: certificate request for renewal", "consumer", cr.consumer, "err", err, "retry_in", d)
		return
	}
	r.key, r.sent = key, now
	r.mu.Unlock()
	s.log.Info("federation: renewing node certificate", "consumer", cr.consumer, "expires", leaf.NotAfter)
	if err := fw.write(kindRenew, renew{CSR: csr}); err != nil {
		u.renewFailed(r, cr, fmt.Errorf("sending the request: %w", err))
	}
}

// renewFailed ends the renewal awaiting an answer as failed.
func (u *upstream) renewFailed(r *renewal, cr *creds, err error) {
	u.mu.Lock()
	life := lifetime(u.leaf)
	u.mu.Unlock()
	r.mu.Lock()
	d := r.failed(u.s.clock.Now(), life)
	r.mu.Unlock()
	u.s.log.Warn("federation: certificate renewal failed", "consumer", cr.consumer, "err", err, "retry_in", d)
}

// finishRenew keeps the renewed certificate, if it answers the request
// awaiting an answer.
func (u *upstream) finishRenew(r *renewal, certDER []byte, cr *creds) {
	r.mu.Lock()
	key := r.key
	r.mu.Unlock()
	if key == nil {
		return // not asked for, or given up on
	}
	leaf, err := verifyChain([][]byte{certDER}, cr.ca, x509.ExtKeyUsageClientAuth)
	if err == nil {
		if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key.Public()) {
			err = errors.New("the certificate is not for the key requested")
		}
	}
	if err == nil {
		err = saveCert(u.dir, key, certDER)
	}
	if err == nil && u.s.cfg.Replicated {
		err = u.saveCreds()
	}
	if err != nil {
		u.renewFailed(r, cr, err)
		return
	}
	r.mu.Lock()
	r.key, r.failures, r.next = nil, 0, time.Time{}
	r.mu.Unlock()
	u.mu.Lock()
	u.certExp, u.leaf = leaf.NotAfter, leaf
	u.mu.Unlock()
	u.s.log.Info("federation: node certificate renewed", "consumer", cr.consumer, "expires", leaf.NotAfter)
}
