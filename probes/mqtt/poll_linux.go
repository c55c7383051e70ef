//go:build linux

package mqtt

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The gate's poller watches the sockets of device connections that wait
// for data, and wakes their readers one at a time, each with an ingest
// slot already taken for it (gate.go).
//
// Without it a reader waits for data in Go's network poller, which makes
// it runnable as soon as its socket has data: under a telemetry storm,
// hundreds of device readers at once, queued in the Go scheduler beside
// the operator API's handlers, before the gate parks them again. With
// it, a reader parks on its own channel, its socket registered (one
// shot) in the poller's epoll instance; the poller's goroutine takes a
// slot for each socket that became readable, in the order they did, and
// only then wakes its reader. So at most as many device readers as there
// are slots are runnable at once, whatever the devices send, and a
// readable socket waits for its slot in the kernel, unread, as before.

// poller is one epoll instance and the goroutine that waits on it.
type poller struct {
	g    *ingestGate
	epfd int
	wake int // eventfd that stops the loop

	mu    sync.Mutex
	conns map[int32]*gatedConn // registered sockets, by fd
	done  chan struct{}
	once  sync.Once
}

func newPoller(g *ingestGate) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	p := &poller{g: g, epfd: epfd, wake: wake, conns: map[int32]*gatedConn{}, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// run hands a slot to the reader of each socket that became readable,
// until close.
func (p *poller) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		for _, e := range events[:n] {
			if int(e.Fd) == p.wake {
				return
			}
			p.mu.Lock()
			c := p.conns[e.Fd]
			p.mu.Unlock()
			if c != nil {
				c.grant()
			}
		}
	}
}

// close stops the loop and releases the epoll instance; connections
// still registered wait in Go's poller from then on.
func (p *poller) close() {
	p.once.Do(func() {
		var one = [8]byte{1}
		unix.Write(p.wake, one[:])
		<-p.done
		p.mu.Lock()
		for fd, c := range p.conns {
			delete(p.conns, fd)
			c.unpolled()
		}
		p.mu.Unlock()
		unix.Close(p.epfd)
		unix.Close(p.wake)
	})
}

// arm registers c's socket fd (first time) or re-arms it, for one
// readiness event. False when it cannot (the poller is closed).
func (p *poller) arm(c *gatedConn, fd int, first bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
	}
	ev := &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	op := unix.EPOLL_CTL_MOD
	if first {
		op = unix.EPOLL_CTL_ADD
		p.conns[int32(fd)] = c
	}
	if err := unix.EpollCtl(p.epfd, op, fd, ev); err != nil {
		delete(p.conns, int32(fd))
		return false
	}
	return true
}

// forget removes c's socket fd, before the socket is closed (so that a
// new socket given the same number is not mistaken for it).
func (p *poller) forget(c *gatedConn, fd int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns[int32(fd)] == c {
		delete(p.conns, int32(fd))
		unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
	}
}

// rawRead reads what rc's socket has now into b, without waiting:
// (0, errWouldBlock) when it has nothing. The socket's deadline and
// closing are checked as for any read.
func rawRead(rc syscall.RawConn, b []byte) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Read(int(fd), b)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	if err != nil {
		return 0, err
	}
	switch {
	case rerr == unix.EAGAIN:
		return 0, errWouldBlock
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: rerr}
	case n < 0:
		return 0, errWouldBlock
	}
	return n, nil
}

// socketFD is rc's file descriptor.
func socketFD(rc syscall.RawConn) int {
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}
