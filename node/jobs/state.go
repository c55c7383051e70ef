package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/strata-dm/strata/model"
)

// transition moves active job j to state (with result fields), durably,
// and unindexes it when final. The caller holds s.mu. On a storage error
// j is left as it was.
func (s *Service) transition(ctx context.Context, j *Job, to State, detail string, result json.RawMessage, errMsg string) error {
	prev := clone(j)
	now := s.clock()
	j.State, j.Updated = to, now
	if result != nil {
		j.Result = result
	}
	if errMsg != "" {
		j.Error = errMsg
	}
	j.History = appendHistory(j.History, Transition{State: to, Time: now, Detail: detail})
	if err := s.put(ctx, j); err != nil {
		*j = prev
		return err
	}
	if to.Final() {
		s.unindex(j)
		delete(s.seen, j.ID)
		if s.finished != nil {
			s.finished(clone(j))
		}
	}
	return nil
}

// appendHistory keeps the first entry (creation) and the latest ones.
func appendHistory(h []Transition, t Transition) []Transition {
	h = append(h, t)
	if len(h) > MaxHistory {
		h = append(h[:1], h[len(h)-MaxHistory+1:]...)
	}
	return h
}

// MarkDelivered records that device acknowledged job id. It is a no-op for
// an unknown, foreign or already delivered job.
func (s *Service) MarkDelivered(ctx context.Context, device, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.active[id]
	if !ok || j.Device != device || j.State != Queued {
		return nil
	}
	return s.transition(ctx, j, Delivered, "", nil, "")
}

// Report records a device's answer to job id: status running (progress),
// succeeded or failed. An answer from another device than the job's is
// refused (not found); one for a job already final is kept in its history
// only.
func (s *Service) Report(ctx context.Context, device, id string, status State, result json.RawMessage, errMsg string) error {
	switch status {
	case Running, Succeeded, Failed:
	default:
		return fmt.Errorf("%w: status must be running, succeeded or failed", model.ErrInvalid)
	}
	if len(result) > MaxResultBytes {
		return fmt.Errorf("%w: result larger than %d bytes", model.ErrInvalid, MaxResultBytes)
	}
	if len(result) > 0 {
		if err := model.CheckValue(result); err != nil {
			return fmt.Errorf("result: %w", err)
		}
	}
	if len(errMsg) > maxErrorLen {
		errMsg = errMsg[:maxErrorLen]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if j, ok := s.active[id]; ok {
		if j.Device != device {
			return fmt.Errorf("%w: job %q", model.ErrNotFound, id)
		}
		if status == Running {
			if j.State == Running {
				return nil
			}
			return s.transition(ctx, j, Running, "", nil, "")
		}
		err := s.transition(ctx, j, status, "", result, errMsg)
		if err == nil {
			s.log.Info("job finished", "job", id, "device", device, "state", status)
		}
		return err
	}
	j, err := s.load(id)
	if err != nil {
		return err
	}
	if j.Device != device {
		return fmt.Errorf("%w: job %q", model.ErrNotFound, id)
	}
	if status == Running {
		return nil
	}
	j.History = appendHistory(j.History, Transition{State: status, Time: s.clock(), Detail: "late answer ignored: job was " + string(j.State)})
	return s.put(ctx, &j)
}

// Cancel cancels a job that is not final; a final job is a conflict.
func (s *Service) Cancel(ctx context.Context, id, by string) (Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.active[id]
	if !ok {
		old, err := s.load(id)
		if err != nil {
			return Job{}, err
		}
		return old, fmt.Errorf("%w: job %s is already %s", model.ErrConflict, id, old.State)
	}
	if err := s.transition(ctx, j, Cancelled, "by "+by, nil, ""); err != nil {
		return Job{}, err
	}
	return clone(j), nil
}

// Wait returns job id once it is final, or its current state when ctx ends
// first (the caller answers 202 then).
func (s *Service) Wait(ctx context.Context, id string) (Job, error) {
	s.mu.Lock()
	j, ok := s.active[id]
	if !ok {
		s.mu.Unlock()
		return s.load(id)
	}
	ch := make(chan struct{})
	s.waiters[id] = append(s.waiters[id], ch)
	s.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		s.mu.Lock()
		s.waiters[id] = deleteChan(s.waiters[id], ch)
		if j, ok = s.active[id]; ok {
			c := clone(j)
			s.mu.Unlock()
			return c, nil
		}
		s.mu.Unlock()
	}
	return s.load(id)
}

func deleteChan(chs []chan struct{}, ch chan struct{}) []chan struct{} {
	for i, c := range chs {
		if c == ch {
			return append(chs[:i], chs[i+1:]...)
		}
	}
	return chs
}

// expireLoop expires jobs past their deadline, checking every second.
func (s *Service) expireLoop() {
	defer close(s.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if s.leading == nil || s.leading() {
				s.expire()
			}
		}
	}
}

// expire moves every active job past its deadline to expired.
func (s *Service) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	for _, j := range s.active {
		if now.Before(j.Deadline) {
			continue
		}
		if err := s.transition(context.Background(), j, Expired, "deadline passed", nil, ""); err != nil {
			s.log.Warn("cannot expire job", "job", j.ID, "err", err)
			return
		}
		s.log.Info("job expired", "job", j.ID, "device", j.Device)
	}
}

// Prune deletes final jobs last updated before cutoff and returns how many.
func (s *Service) Prune(ctx context.Context, cutoff time.Time) (int, error) {
	var old []string
	err := s.List(func(j Job) bool {
		if j.State.Final() && j.Updated.Before(cutoff) {
			old = append(old, j.ID)
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	for i, id := range old {
		if err := s.rec.DeleteRecord(ctx, KindJob, id); err != nil {
			return i, err
		}
	}
	return len(old), nil
}
