package jobs

import (
	"encoding/json"

	"github.com/strata-dm/strata/model"
)

// Following a replicated log. On a replica of a cluster, jobs are also
// created and changed through the other replicas: their records arrive
// in the log this replica applies. Follow brings the jobs in memory up to
// date with them, so that every replica knows every job not final: the
// replica that holds a device's session delivers its new commands, takes
// its results, and lists them as pending when it subscribes.
//
// Each job remembers the log sequence number of the version in memory
// (seen): the service's own writes set it, and Follow skips what is not
// newer, so an entry the service wrote itself, or one older than what it
// holds, never goes back in time.
//
// A job is delivered only if it is still queued once all of es is
// applied to memory, and its record this replica applied is not final:
// a job created and finished in entries followed together, or finished
// in a batch applied since, is not sent to its device.

// Follow applies the job records among es, entries of the log in order.
// It takes the service's lock: call it from a goroutine of its own, never
// from inside a commit (model.Model.OnCommit runs there, where a caller
// of the service may hold the lock while it waits for that commit).
func (s *Service) Follow(es []model.Entry) {
	var deliver []Job
	for i := range es {
		e := &es[i]
		r := e.Mutation.Record
		if r == nil || r.Kind != KindJob {
			continue
		}
		// The job's stripe first: a write of this replica's own that is
		// between its commit and its written is applied to memory before
		// this entry is looked at (so it is not delivered twice).
		unlock := s.jobLock(r.Key)
		s.mu.Lock()
		if j := s.followOne(e); j != nil {
			deliver = append(deliver, *j)
		}
		s.mu.Unlock()
		unlock()
	}
	s.mu.Lock()
	out := deliver[:0]
	for _, j := range deliver {
		if cur, ok := s.active[j.ID]; ok && cur.State == Queued && !s.finalHere(j.ID) {
			out = append(out, clone(cur))
		}
	}
	s.mu.Unlock()
	for _, j := range out {
		s.deliver(j)
	}
}

// followOne applies job record entry e to memory, and returns the job
// when it is new here and queued (to deliver). The caller holds s.mu.
func (s *Service) followOne(e *model.Entry) (queued *Job) {
	r := e.Mutation.Record
	if e.Seq <= s.seen[r.Key] {
		return nil
	}
	switch e.Mutation.Op {
	case model.OpDeleteRecord:
		if j, ok := s.active[r.Key]; ok {
			s.unindex(j)
		}
		delete(s.seen, r.Key)
	case model.OpPutRecord:
		j := new(Job)
		if err := json.Unmarshal(r.Value, j); err != nil || j.ID != r.Key {
			s.log.Warn("skipping a damaged job record from the log", "job", r.Key, "seq", e.Seq)
			return nil
		}
		cur, active := s.active[j.ID]
		switch {
		case j.State.Final():
			if active {
				s.unindex(cur) // wakes its waiters; its finisher ran where it finished
			}
			delete(s.seen, j.ID)
			return nil
		case active && cur.Device == j.Device:
			s.active[j.ID] = j
		case active:
			s.unindex(cur)
			s.index(j)
		default:
			s.index(j)
			if j.State == Queued {
				c := clone(j)
				queued = &c
			}
		}
		s.seen[j.ID] = e.Seq
	}
	return queued
}

// wrote records that the version of job id in memory is the one logged
// at seq; the caller holds s.mu.
func (s *Service) wrote(id string, seq uint64) {
	if seq > s.seen[id] {
		s.seen[id] = seq
	}
}
