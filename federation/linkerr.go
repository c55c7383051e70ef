package federation

import "time"

// linkErrors is what a link shows of its errors: the error that affects
// it now, with its time, cleared once the link is healthy again (it then
// shows as the previous error, so the cause of the last outage stays
// visible). The zero value is a link without errors.
type linkErrors struct {
	last, prev         string
	lastTime, prevTime time.Time
}

// set records err (ignored when empty) as the current error.
func (e *linkErrors) set(err string, at time.Time) {
	if err == "" {
		return
	}
	e.last, e.lastTime = err, at.UTC()
}

// healthy moves the current error, if any, to the previous one.
func (e *linkErrors) healthy() {
	if e.last == "" {
		return
	}
	e.prev, e.prevTime = e.last, e.lastTime
	e.last, e.lastTime = "", time.Time{}
}

func (e *linkErrors) fill(st *PeerStatus) {
	st.LastError, st.LastErrorTime = e.last, e.lastTime
	st.PreviousError, st.PreviousErrorTime = e.prev, e.prevTime
}
