package mqtt

import (
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// deadlineListener bounds the time from accept to the first packet:
// mochi sets the keepalive deadline only after CONNECT, so a connection
// that never sends one would otherwise be held forever. It accepts a
// connection only when admit has room (admit.go), and puts every
// connection under the ingest gate, when there is one.
//
// With admit, connections are accepted by a goroutine of the listener's
// own (pump), and parked ones wait each on a goroutine of its own (wait)
// until they are admitted; both hand what they admit to Accept. Close
// stops them and waits for them.
type deadlineListener struct {
	net.Listener
	timeout time.Duration
	gate    *ingestGate
	admit   *admission // nil: unbounded
	// abandoned counts connections closed by the device before they
	// were accepted (or while they were parked); crowded those closed
	// because their source held its share of admit and its queue was
	// full, or they waited the whole connect timeout; parked those that
	// waited for their source's share.
	abandoned, crowded, parked prometheus.Counter

	ready chan net.Conn // admitted connections, to Accept
	done  chan struct{} // closed when pump ended; err is why
	err   error
	wg    sync.WaitGroup // pump and the parked connections' goroutines
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func (l *deadlineListener) Accept() (net.Conn, error) {
	if l.admit == nil {
		return l.acceptOne()
	}
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

// run starts pump, with admit.
func (l *deadlineListener) run() {
	if l.admit == nil {
		return
	}
	l.ready, l.done = make(chan net.Conn), make(chan struct{})
	l.wg.Add(1)
	go l.pump()
}

// acceptOne is Accept without admission.
func (l *deadlineListener) acceptOne() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if peerGone(c) {
			c.Close()
			inc(l.abandoned)
			continue
		}
		dl := time.Now().Add(l.timeout)
		c.SetDeadline(dl)
		if l.gate != nil {
			return newGatedConn(c, l.gate, dl), nil
		}
		return c, nil
	}
}

// pump accepts connections while admit has room, until the listener
// closes or fails.
func (l *deadlineListener) pump() {
	defer l.wg.Done()
	defer close(l.done)
	for {
		if !l.admit.acquire() {
			l.err = net.ErrClosed
			return
		}
		for held := true; held; {
			c, err := l.Listener.Accept()
			if err != nil {
				l.admit.release()
				l.err = err
				return
			}
			if peerGone(c) {
				// The device gave up while it waited to be accepted (it
				// will come back): no handshake for it.
				c.Close()
				inc(l.abandoned)
				continue
			}
			// The connect deadline, which bounds a parked connection's
			// wait too.
			dl := time.Now().Add(l.timeout)
			c.SetDeadline(dl)
			src := source(c)
			switch p, ok := l.admit.enter(src, c); {
			case !ok:
				// Its source holds its share of the bound, and its queue
				// is full: closed at once, the room kept for others.
				c.Close()
				if !l.closing() {
					inc(l.crowded)
				}
			case p != nil:
				inc(l.parked)
				l.wg.Add(1)
				go l.wait(p)
			default:
				held = false
				l.deliver(c, src, dl)
			}
		}
	}
}

// wait waits for parked connection p to be admitted (handOver), for its
// device to close it, for its deadline, or for the listener to close.
func (l *deadlineListener) wait(p *parkedConn) {
	defer l.wg.Done()
	err := waitParked(p.Conn)
	admitted := l.admit.unpark(p)
	switch {
	case admitted && err == nil:
		// Gone as it was admitted: its admission goes to the next.
		p.Conn.Close()
		inc(l.abandoned)
		l.admissionOf(p.src).connected()
	case admitted:
		dl := time.Now().Add(l.timeout)
		p.Conn.SetDeadline(dl)
		l.deliver(p.Conn, p.src, dl)
	case err == nil:
		p.Conn.Close()
		inc(l.abandoned)
	default:
		// Its wait timed out, or the listener closed.
		p.Conn.Close()
		if !l.closing() {
			inc(l.crowded)
		}
	}
}

// closing reports whether Close was called.
func (l *deadlineListener) closing() bool {
	select {
	case <-l.admit.stop:
		return true
	default:
		return false
	}
}

// handOver wakes parked connection p, admitted.
func (l *deadlineListener) handOver(p *parkedConn) { p.Conn.SetReadDeadline(woken) }

// admissionOf is a new admission of a connection from src, holding a
// slot and its source's count.
func (l *deadlineListener) admissionOf(src string) *admit {
	return &admit{a: l.admit, src: src, hand: l.handOver}
}

// deliver hands c, admitted, with its deadline dl, to Accept; or closes
// it if the listener closed meanwhile.
func (l *deadlineListener) deliver(c net.Conn, src string, dl time.Time) {
	var out net.Conn
	if l.gate != nil {
		gc := newGatedConn(c, l.gate, dl)
		gc.adm.a, gc.adm.src, gc.adm.hand = l.admit, src, l.handOver
		out = gc
	} else {
		ac := &admittedConn{Conn: c}
		ac.adm.a, ac.adm.src, ac.adm.hand = l.admit, src, l.handOver
		out = ac
	}
	select {
	case <-l.admit.stop:
		out.Close()
		return
	default:
	}
	select {
	case l.ready <- out:
	case <-l.admit.stop:
		out.Close()
	}
}

func (l *deadlineListener) Close() error {
	if l.admit == nil {
		return l.Listener.Close()
	}
	l.admit.close()
	err := l.Listener.Close()
	l.wg.Wait()
	return err
}
