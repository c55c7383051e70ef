package udpproxy

import (
	"sync"
	"time"
)

// delayLine holds delayed datagrams and delivers them when due, from one
// goroutine, in the order they were submitted. Due times never decrease
// along the queue (a datagram is due no earlier than the one before it),
// so the queue is a FIFO and one timer on its head is enough.
type delayLine struct {
	wake chan struct{} // capacity 1: something was queued
	quit chan struct{} // closed by stop

	mu      sync.Mutex
	q       []pending // guarded by mu
	lastDue time.Time // guarded by mu; due time of the newest queued datagram
	inLine  int       // guarded by mu; queued or being delivered
}

type pending struct {
	due     time.Time
	b       []byte
	deliver func([]byte)
}

func newDelayLine() *delayLine {
	return &delayLine{wake: make(chan struct{}, 1), quit: make(chan struct{})}
}

// submit delivers b after d. With no delay and nothing in the line it
// delivers at once on the caller's goroutine; otherwise it copies b and
// queues it behind what is already in the line, so a datagram never
// overtakes an earlier one when the delay is lowered.
func (l *delayLine) submit(d time.Duration, b []byte, deliver func([]byte)) {
	l.mu.Lock()
	if d == 0 && l.inLine == 0 {
		l.mu.Unlock()
		deliver(b)
		return
	}
	due := time.Now().Add(d)
	if due.Before(l.lastDue) {
		due = l.lastDue
	}
	l.lastDue = due
	l.q = append(l.q, pending{due: due, b: append([]byte(nil), b...), deliver: deliver})
	l.inLine++
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// run delivers queued datagrams when due until stop is called; datagrams
// still queued then are discarded.
func (l *delayLine) run() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		l.mu.Lock()
		if len(l.q) == 0 {
			l.mu.Unlock()
			select {
			case <-l.wake:
				continue
			case <-l.quit:
				return
			}
		}
		head := l.q[0]
		if wait := time.Until(head.due); wait > 0 {
			l.mu.Unlock()
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-l.wake:
				timer.Stop()
			case <-l.quit:
				return
			}
			continue
		}
		l.q[0] = pending{}
		l.q = l.q[1:]
		l.mu.Unlock()
		head.deliver(head.b)
		l.mu.Lock()
		l.inLine--
		l.mu.Unlock()
	}
}

func (l *delayLine) stop() { close(l.quit) }
